//! Version skew: which of the peer's methods each of this side's methods calls, and how values
//! cross between two releases' shapes — decided once per connection, at the handshake, so that
//! a call costs an index and nothing more when both sides agree.
//!
//! Invariants (each has a test below):
//!
//! 1. **By name.** A method is matched to the peer's by service and method name, never by
//!    position: methods inserted, removed or reordered leave the others callable.
//! 2. **Equal hashes, no work.** When a method's kind and both hashes match, its route is a
//!    plain index, with nothing to translate in either direction.
//! 3. **Differences are checked before anything is sent.** A method whose schemas differ is
//!    callable only if the peer can read this side's arguments and this side the peer's result;
//!    otherwise every call fails locally, naming the method and the path of the conflict. A
//!    method the peer lacks fails locally as unimplemented.
//! 4. **Both sides or neither** exchange schemas: the decision depends only on the two Hellos.
//! 5. **Strict** wants refuse the connection unless the two definitions are identical.
//! 6. A peer's schema that is malformed, or does not hash to what its Hello announced, makes
//!    the methods it describes incompatible — never the connection, never a panic.

use std::collections::HashMap;
use std::sync::Arc;

use crate::protocol::{Hello, MethodDesc, ServiceDesc};
use crate::schema::compat::{self, Mismatch};
use crate::schema::{Graph, MethodKind, MethodSchema, Node, Reading, ServiceSchema, ServiceSpec};

/// How one of this side's methods is called on this connection.
#[derive(Clone, Debug)]
pub(crate) enum Route {
    /// Call the peer's `method` of its `service`; the result is read through `result` when the
    /// peer writes it in another shape.
    Call {
        service: u32,
        method: u32,
        result: Option<Arc<Reading>>,
    },
    /// The peer does not have the method (or the service).
    Unimplemented(Arc<str>),
    /// The peer has it, but one side cannot read what the other writes.
    Incompatible(Arc<str>),
}

/// How the peer's calls of one of this side's methods are read.
#[derive(Clone, Debug)]
pub(crate) enum ArgsRoute {
    /// As they are.
    Direct,
    /// Translated from the peer's shape: the request's arguments, and (methods taking an
    /// input stream) the input's items.
    Translate(Arc<Reading>, Option<Arc<Reading>>),
    /// Not at all: the peer's shape is unknown (answered as a bad request).
    Unreadable(Arc<str>),
}

/// This side's services, as the handshake needs them.
pub(crate) struct Ours<'a> {
    pub(crate) served: &'a [Arc<ServiceSpec>],
    pub(crate) wanted: &'a [Arc<ServiceSpec>],
}

/// A method's kind, hashes and name equal.
fn same(a: &MethodDesc, b: &MethodDesc) -> bool {
    a.kind == b.kind && a.args == b.args && a.result == b.result
}

/// The services both sides know of in one direction (one serves, the other wants) whose
/// same-named methods differ.
fn differing<'a>(mine: &'a [Arc<ServiceSpec>], theirs: &[ServiceDesc]) -> Vec<&'a ServiceSpec> {
    mine.iter()
        .filter(|spec| {
            theirs.iter().any(|t| {
                t.name == spec.desc.name
                    && spec
                        .desc
                        .methods
                        .iter()
                        .any(|m| t.method(&m.name).is_some_and(|(_, other)| !same(m, other)))
            })
        })
        .map(|s| &**s)
        .collect()
}

/// The schemas this side sends after the Hellos (`None`: no Schemas frame from either side).
pub(crate) fn schemas_to_send(ours: &Ours<'_>, peer: &Hello) -> Option<Vec<ServiceSchema>> {
    let mut specs = differing(ours.served, &peer.wants);
    specs.extend(differing(ours.wanted, &peer.services));
    // What the peer's side finds differing is the same pairs seen from there: a non-empty
    // list on one side is a non-empty list on the other.
    if specs.is_empty() {
        return None;
    }
    let mut out: Vec<ServiceSchema> = Vec::new();
    for spec in specs {
        if !out.iter().any(|s| s.name == spec.schema.name) {
            out.push(spec.schema.clone());
        }
    }
    Some(out)
}

/// The peer's schemas by service name, each checked (an `Err` says why it cannot be used).
pub(crate) type PeerSchemas = HashMap<String, Result<Arc<ServiceSchema>, Arc<str>>>;

/// Checks and indexes the schemas the peer sent.
pub(crate) fn peer_schemas(list: Vec<ServiceSchema>) -> PeerSchemas {
    list.into_iter()
        .map(|s| {
            let name = s.name.clone();
            let checked = match s.validate() {
                Ok(()) => Ok(Arc::new(s)),
                Err(e) => Err(Arc::from(format!("the peer's schema is malformed: {e}"))),
            };
            (name, checked)
        })
        .collect()
}

/// What the peer serves, for messages.
fn served_list(peer: &Hello) -> String {
    // hvrpc's own services (reflection) go without saying.
    let names: Vec<&str> = peer
        .services
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| !n.starts_with("hvrpc."))
        .collect();
    if names.is_empty() {
        "nothing".to_owned()
    } else {
        names.join(", ")
    }
}

fn kind_name(code: u32) -> String {
    MethodKind::from_code(code).map_or_else(
        || format!("a method of a kind this release does not know ({code})"),
        |k| k.describe().to_owned(),
    )
}

/// The peer's schema of `service.method`, checked against the hashes it announced.
fn peer_method<'a>(
    schemas: &'a PeerSchemas,
    service: &str,
    desc: &MethodDesc,
) -> Result<(&'a ServiceSchema, &'a MethodSchema), String> {
    let schema = match schemas.get(service) {
        None => return Err("the peer did not describe it".into()),
        Some(Err(e)) => return Err(e.to_string()),
        Some(Ok(s)) => &**s,
    };
    let m = schema
        .method(&desc.name)
        .ok_or_else(|| "the peer did not describe it".to_owned())?;
    match crate::schema::method_desc(&schema.graph, m) {
        Ok(d) if same(&d, desc) => Ok((schema, m)),
        Ok(_) => Err("the peer's schema of it does not match the hashes it announced".into()),
        Err(e) => Err(format!("the peer's schema of it is unusable: {e}")),
    }
}

/// `Service.method: path: ours here, theirs on the peer`.
fn conflict(service: &str, method: &str, at: &str, m: &Mismatch, we_read: bool) -> Arc<str> {
    let (ours, theirs) = if we_read {
        (&m.reader, &m.writer)
    } else {
        (&m.writer, &m.reader)
    };
    Arc::from(format!(
        "{service}.{method}: {at}{}: {ours} here, {theirs} on the peer",
        m.path
    ))
}

/// The route of this side's method `index` of `spec` on a connection to `peer`.
pub(crate) fn route(
    spec: &ServiceSpec,
    index: usize,
    peer: &Hello,
    schemas: &PeerSchemas,
) -> Route {
    let svc = &spec.desc.name;
    let (Some(mine), Some(my_schema)) =
        (spec.desc.methods.get(index), spec.schema.methods.get(index))
    else {
        return Route::Unimplemented(Arc::from(format!("{svc} has no method number {index}")));
    };
    let name = &mine.name;
    let Some((si, theirs)) = peer
        .services
        .iter()
        .enumerate()
        .find(|(_, s)| s.name == *svc)
    else {
        return Route::Unimplemented(Arc::from(format!(
            "{svc}.{name} is not implemented by the peer: it does not serve {svc} (it serves: {})",
            served_list(peer)
        )));
    };
    let Some((mi, desc)) = theirs.method(name) else {
        return Route::Unimplemented(Arc::from(format!(
            "{svc}.{name} is not implemented by the peer (its {svc} is another release)"
        )));
    };
    let service = u32::try_from(si).unwrap_or(u32::MAX);
    if desc.kind != mine.kind {
        return Route::Incompatible(Arc::from(format!(
            "{svc}.{name}: {} here, {} on the peer",
            kind_name(mine.kind),
            kind_name(desc.kind)
        )));
    }
    if same(mine, desc) {
        return Route::Call {
            service,
            method: mi,
            result: None,
        };
    }
    let (peer_schema, peer_m) = match peer_method(schemas, svc, desc) {
        Ok(found) => found,
        Err(e) => {
            return Route::Incompatible(Arc::from(format!(
                "{svc}.{name}: its schemas differ on the two sides, and {e}"
            )));
        }
    };
    let ours = &spec.schema.graph;
    let theirs_g = &peer_schema.graph;
    if desc.args != mine.args {
        if peer_m.args.len() != my_schema.args.len() {
            return Route::Incompatible(Arc::from(format!(
                "{svc}.{name}: {} arguments here, {} on the peer",
                my_schema.args.len(),
                peer_m.args.len()
            )));
        }
        for (a, b) in my_schema.args.iter().zip(&peer_m.args) {
            if let Err(m) = compat::check(ours, a.node, theirs_g, b.node) {
                return Route::Incompatible(conflict(
                    svc,
                    name,
                    &format!("args.{}", a.name),
                    &m,
                    false,
                ));
            }
        }
    }
    let result = if desc.result == mine.result {
        None
    } else {
        if let Err(m) = compat::check(theirs_g, peer_m.result, ours, my_schema.result) {
            return Route::Incompatible(conflict(svc, name, "result", &m, true));
        }
        Some(Arc::new(Reading {
            graph: Arc::new(peer_schema.graph.clone()),
            root: peer_m.result,
        }))
    };
    Route::Call {
        service,
        method: mi,
        result,
    }
}

/// The routes of every method of every service this side wants.
pub(crate) fn routes(wanted: &[Arc<ServiceSpec>], peer: &Hello, schemas: &PeerSchemas) -> Routes {
    Routes(
        wanted
            .iter()
            .map(|spec| {
                let list = (0..spec.desc.methods.len())
                    .map(|i| route(spec, i, peer, schemas))
                    .collect();
                (Arc::clone(spec), list)
            })
            .collect(),
    )
}

/// The routes of this side's wanted services, by service, by method index.
#[derive(Debug, Default)]
pub(crate) struct Routes(Vec<(Arc<ServiceSpec>, Vec<Route>)>);

impl Routes {
    /// The route of `method` of the wanted service `name`, if it is wanted.
    pub(crate) fn get(&self, name: &str, method: u32) -> Option<&Route> {
        self.0
            .iter()
            .find(|(s, _)| s.desc.name == name)
            .and_then(|(_, r)| r.get(method as usize))
    }
}

/// How the peer's calls are read, by this side's service index, by method index: the route
/// of the arguments, and whether the method takes an input stream.
#[derive(Debug, Default)]
pub(crate) struct Readings(Vec<Vec<(ArgsRoute, bool)>>);

impl Readings {
    /// How calls of `method` of this side's service `service` are read.
    pub(crate) fn get(&self, service: u32, method: u32) -> &ArgsRoute {
        self.0
            .get(service as usize)
            .and_then(|s| s.get(method as usize))
            .map_or(&ArgsRoute::Direct, |m| &m.0)
    }

    /// Whether `method` of this side's service `service` takes an input stream.
    pub(crate) fn takes_input(&self, service: u32, method: u32) -> bool {
        self.0
            .get(service as usize)
            .and_then(|s| s.get(method as usize))
            .is_some_and(|m| m.1)
    }
}

/// How this side reads the peer's calls of the services it serves.
pub(crate) fn readings(
    served: &[Arc<ServiceSpec>],
    peer: &Hello,
    schemas: &PeerSchemas,
) -> Readings {
    Readings(
        served
            .iter()
            .map(|spec| {
                let svc = &spec.desc.name;
                let want = peer.wants.iter().find(|w| w.name == *svc);
                spec.desc
                    .methods
                    .iter()
                    .map(|mine| {
                        let input =
                            MethodKind::from_code(mine.kind).is_some_and(MethodKind::takes_input);
                        (args_route(svc, mine, want, schemas), input)
                    })
                    .collect()
            })
            .collect(),
    )
}

/// How the peer's calls of this side's method `mine` of service `svc` are read.
fn args_route(
    svc: &str,
    mine: &MethodDesc,
    want: Option<&ServiceDesc>,
    schemas: &PeerSchemas,
) -> ArgsRoute {
    let Some((_, desc)) = want.and_then(|w| w.method(&mine.name)) else {
        return ArgsRoute::Direct;
    };
    if desc.args == mine.args {
        return ArgsRoute::Direct;
    }
    match peer_method(schemas, svc, desc) {
        Ok((schema, m)) => {
            // An input stream's item is the last argument in the schema;
            // the request carries the others.
            let mut nodes = m.arg_nodes();
            let input = match (MethodKind::from_code(mine.kind), nodes.last()) {
                (Some(k), Some(&item)) if k.takes_input() => {
                    nodes.pop();
                    Some(Arc::new(Reading {
                        graph: Arc::new(schema.graph.clone()),
                        root: item,
                    }))
                }
                _ => None,
            };
            ArgsRoute::Translate(Arc::new(args_reading(&schema.graph, &nodes)), input)
        }
        Err(e) => ArgsRoute::Unreadable(Arc::from(format!(
            "{svc}.{}: the arguments are in another release's shape, and {e}",
            mine.name
        ))),
    }
}

/// A reading of an argument tuple: the writer's graph with the tuple added as its root.
fn args_reading(graph: &Graph, args: &[u32]) -> Reading {
    let mut graph = graph.clone();
    let root = if args.is_empty() {
        Node::Unit
    } else {
        Node::Tuple(args.to_vec())
    };
    graph.nodes.push(root);
    let root = u32::try_from(graph.nodes.len() - 1).unwrap_or(u32::MAX);
    Reading {
        graph: Arc::new(graph),
        root,
    }
}

/// The strict checks: every service this side requires exactly must be served identically by
/// the peer, and every service the peer requires exactly must be served identically here.
pub(crate) fn check_strict(ours: &Ours<'_>, strict: &[bool], peer: &Hello) -> Result<(), String> {
    for (spec, _) in ours.wanted.iter().zip(strict).filter(|(_, s)| **s) {
        let name = &spec.desc.name;
        let Some(theirs) = peer.services.iter().find(|s| s.name == *name) else {
            return Err(format!(
                "the peer does not serve {name} (it serves: {})",
                served_list(peer)
            ));
        };
        exactly(&spec.desc, theirs)?;
    }
    for want in peer.wants.iter().filter(|w| w.strict) {
        let Some(spec) = ours.served.iter().find(|s| s.desc.name == want.name) else {
            return Err(format!(
                "the peer requires service {}, which this side does not serve",
                want.name
            ));
        };
        exactly(want, &spec.desc)?;
    }
    Ok(())
}

/// Two announcements of one service are identical (method order aside).
fn exactly(want: &ServiceDesc, served: &ServiceDesc) -> Result<(), String> {
    let name = &want.name;
    let differ = |what: String| {
        Err(format!(
            "service {name} is defined differently on the two sides ({what}), and it is required \
             exactly (`Connector::require`): build both from the same service definition"
        ))
    };
    for m in &want.methods {
        match served.method(&m.name) {
            None => return differ(format!("the server lacks {name}.{}", m.name)),
            Some((_, s)) if !same(m, s) => {
                return differ(format!(
                    "{name}.{} has other argument or result types",
                    m.name
                ));
            }
            Some(_) => {}
        }
    }
    for s in &served.methods {
        if want.method(&s.name).is_none() {
            return differ(format!(
                "the server has {name}.{}, the client does not",
                s.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
