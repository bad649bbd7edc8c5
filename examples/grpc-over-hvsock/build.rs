//! Generates the `GuestAgent` gRPC service's client and server with tonic-build's manual
//! builder: the messages are prost structs in `src/lib.rs`, so no `protoc` is needed to build
//! (the equivalent `.proto` is in `proto/guest_agent.proto`, for clients in other languages).

fn main() {
    let method = |name: &str, route: &str, input: &str, output: &str| {
        tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type(input)
            .output_type(output)
            .codec_path("tonic_prost::ProstCodec")
    };
    let service = tonic_build::manual::Service::builder()
        .name("GuestAgent")
        .package("hvrpc.example")
        .comment("What a host asks of its guest.")
        .method(
            method("ping", "Ping", "crate::PingRequest", "crate::PingReply")
                .comment("Echoes the message, with the address the guest saw the call come from.")
                .build(),
        )
        .method(
            method("count", "Count", "crate::CountRequest", "crate::CountItem")
                .comment("Streams the numbers 0..n.")
                .server_streaming()
                .build(),
        )
        .build();
    tonic_build::manual::Builder::new().compile(&[service]);
}
