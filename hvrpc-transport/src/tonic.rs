//! [`tonic`] 0.14 (gRPC) over every hvrpc transport (feature `tonic`, which includes `hyper`).
//!
//! * Servers: [`Listener::incoming`](crate::Listener::incoming) is the stream
//!   `Server::serve_with_incoming` takes, and [`Stream`] is tonic's `Connected` with the
//!   [`PeerAddr`] as its connect info: `request.extensions().get::<PeerAddr>()` tells a
//!   handler which VM (by VM id, CID or VMM socket) called it.
//! * Clients: `Endpoint::connect_with_connector` takes a
//!   [`hyper::Connector`](crate::hyper::Connector), which dials an hvrpc [`Endpoint`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use hvrpc_transport::{Listener, PeerAddr, hyper::Connector};
//!
//! // The guest serves gRPC on vsock port 0x5001 ...
//! let listener = Listener::bind(&"vsock://any:0x5001".parse()?).await?;
//! let services = tonic::service::Routes::default(); // .add_service(MyServer::new(my_impl))
//! let server = tonic::transport::Server::builder()
//!     .add_routes(services)
//!     .serve_with_incoming(listener.incoming());
//! # drop(server);
//!
//! // ... and the host calls it (here over the VMM's hybrid-vsock socket).
//! let channel = tonic::transport::Endpoint::from_static("http://guest")
//!     .connect_with_connector(Connector::new("hybrid-vsock:///run/vm.sock:0x5001".parse()?))
//!     .await?;
//! # drop(channel);
//! # Ok(())
//! # }
//! ```
//!
//! [`Endpoint`]: crate::Endpoint

use ::tonic::transport::server::Connected;

use crate::addr::PeerAddr;
use crate::stream::Stream;

impl Connected for Stream {
    type ConnectInfo = PeerAddr;

    fn connect_info(&self) -> PeerAddr {
        self.peer_addr().clone()
    }
}
