//! `hvrpc describe` and `hvrpc call`: any server's methods, through its reflection and
//! `hvrpc::json`, without its Rust types.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use futures_util::StreamExt;
use hvrpc::json::{Limits, from_json, to_json};
use hvrpc::reflection::ReflectionClient;
use hvrpc::schema::{Graph, MethodKind, MethodSchema, Node, ServiceSchema, VariantShape};
use hvrpc::transport::ConnectOptions;
use hvrpc::{Config, Connection, Connector, Endpoint, Error};
use serde_json::Value;

/// Exit statuses of `hvrpc call` (also in its `--help`).
pub(crate) mod exit {
    /// The method's own error (printed as JSON on stderr).
    pub(crate) const APPLICATION: u8 = 3;
    /// Connecting, the handshake, or the connection failed.
    pub(crate) const TRANSPORT: u8 = 4;
    /// The deadline (`--timeout`) passed.
    pub(crate) const DEADLINE: u8 = 5;
    /// The arguments did not fit the method's types, or the result could not be read.
    pub(crate) const CODEC: u8 = 6;
    /// The server has no such method, or failed the call (an error code of its runtime).
    pub(crate) const REMOTE: u8 = 7;
    /// Interrupted (Ctrl-C): the call was cancelled on the server.
    pub(crate) const INTERRUPTED: u8 = 130;
}

/// A failure with its exit status.
pub(crate) struct CallFailure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

fn failure(code: u8, message: impl Into<String>) -> CallFailure {
    CallFailure {
        code,
        message: message.into(),
    }
}

/// The exit status and message of a runtime error, naming the endpoint.
fn from_error<E: std::fmt::Display>(endpoint: &Endpoint, e: &Error<E>) -> CallFailure {
    let code = match e {
        Error::Connect(_) | Error::ConnectionLost(_) | Error::Handshake(_) => exit::TRANSPORT,
        // Whichever side's timer saw the deadline first: the caller's, or the server's
        // (which answers with the code).
        Error::DeadlineExceeded
        | Error::Remote {
            code: hvrpc::ErrorCode::DeadlineExceeded,
            ..
        } => exit::DEADLINE,
        Error::Protocol(_)
        | Error::Encode(_)
        | Error::Incompatible(_)
        | Error::FrameTooLarge { .. } => exit::CODEC,
        _ => exit::REMOTE,
    };
    let message = e.to_string();
    let ep = endpoint.to_string();
    if message.contains(&ep) {
        failure(code, message)
    } else {
        failure(code, format!("{ep}: {message}"))
    }
}

/// Connects within `timeout` (dialling and handshake).
pub(crate) async fn connect(
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<Connection, CallFailure> {
    let mut config = Config::default();
    config.handshake_timeout = timeout;
    config.connect = ConnectOptions::new().timeout(timeout);
    let connecting = async {
        Connector::new()
            .config(config)
            .want::<ReflectionClient>()
            .connect(endpoint)
            .await?
            .connection()
            .await
    };
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(from_error(endpoint, &e)),
        Err(_) => Err(failure(
            exit::TRANSPORT,
            format!("{endpoint}: no handshake within {timeout:?}"),
        )),
    }
}

/// The peer's schemas, through its reflection service.
pub(crate) async fn schemas(
    endpoint: &Endpoint,
    conn: &Connection,
) -> Result<Vec<ServiceSchema>, CallFailure> {
    match ReflectionClient::new(conn.clone()).describe().await {
        Ok(list) => Ok(list),
        Err(Error::Application(e)) => Err(failure(exit::REMOTE, format!("{endpoint}: {e}"))),
        Err(Error::Unimplemented(_)) => Err(failure(
            exit::REMOTE,
            format!(
                "{endpoint} does not offer reflection (an hvrpc 0.1 peer, or not hvrpc's server)"
            ),
        )),
        Err(e) => Err(from_error(endpoint, &e)),
    }
}

/// How deep a type is rendered before `…` stands for the rest.
const RENDER_DEPTH: usize = 32;
/// How many nodes a whole description renders before `…` stands for the rest: a graph from a
/// peer that shares nodes can describe a type whose text grows exponentially.
const RENDER_NODES: usize = 100_000;

/// Rust-like text of what a graph describes: signatures, then the named types below. The graph
/// comes from the peer: it may loop where no Rust type can (`Option` of itself) or be shaped to
/// explode, so rendering is bounded in depth and in nodes.
struct Render<'g> {
    graph: &'g Graph,
    /// Named containers met, by node, with the name to print.
    named: BTreeMap<u32, String>,
    order: Vec<u32>,
    depth: usize,
    budget: usize,
}

impl<'g> Render<'g> {
    fn new(graph: &'g Graph) -> Self {
        Self {
            graph,
            named: BTreeMap::new(),
            order: Vec::new(),
            depth: 0,
            budget: RENDER_NODES,
        }
    }

    fn name_of(&mut self, i: u32, base: &str) -> String {
        if let Some(n) = self.named.get(&i) {
            return n.clone();
        }
        // Two instantiations of one generic type share serde's name: tell them apart.
        let taken = self
            .named
            .values()
            .filter(|n| n.split('#').next() == Some(base))
            .count();
        let name = if taken == 0 {
            base.to_owned()
        } else {
            format!("{base}#{}", taken + 1)
        };
        self.named.insert(i, name.clone());
        self.order.push(i);
        name
    }

    fn ty(&mut self, i: u32) -> String {
        if self.depth >= RENDER_DEPTH || self.budget == 0 {
            return "…".into();
        }
        self.budget -= 1;
        self.depth += 1;
        let text = self.ty_inner(i);
        self.depth -= 1;
        text
    }

    fn ty_inner(&mut self, i: u32) -> String {
        let Some(node) = self.graph.node(i) else {
            return "?".into();
        };
        match node {
            Node::Bool => "bool".into(),
            Node::I8 => "i8".into(),
            Node::I16 => "i16".into(),
            Node::I32 => "i32".into(),
            Node::I64 => "i64".into(),
            Node::I128 => "i128".into(),
            Node::U8 => "u8".into(),
            Node::U16 => "u16".into(),
            Node::U32 => "u32".into(),
            Node::U64 => "u64".into(),
            Node::U128 => "u128".into(),
            Node::F32 => "f32".into(),
            Node::F64 => "f64".into(),
            Node::Char => "char".into(),
            Node::Str => "String".into(),
            Node::Bytes => "Bytes".into(),
            Node::Unit => "()".into(),
            Node::Option(c) => format!("Option<{}>", self.ty(*c)),
            Node::Seq(c) => format!("Vec<{}>", self.ty(*c)),
            Node::Map { key, value } => format!("Map<{}, {}>", self.ty(*key), self.ty(*value)),
            Node::Tuple(cs) => {
                let parts: Vec<String> = cs.iter().map(|c| self.ty(*c)).collect();
                format!("({})", parts.join(", "))
            }
            Node::UnitStruct { name }
            | Node::Newtype { name, .. }
            | Node::TupleStruct { name, .. }
            | Node::Struct { name, .. }
            | Node::Enum { name, .. } => {
                if name == "Result"
                    && let Node::Enum { variants, .. } = node
                    && let [ok, err] = variants.as_slice()
                    && let (VariantShape::Newtype(o), VariantShape::Newtype(e)) =
                        (&ok.shape, &err.shape)
                {
                    return format!("Result<{}, {}>", self.ty(*o), self.ty(*e));
                }
                self.name_of(i, name)
            }
        }
    }

    fn fields(&mut self, fields: &[hvrpc::schema::Field]) -> String {
        let parts: Vec<String> = fields
            .iter()
            .map(|f| {
                format!(
                    "{}: {}{}",
                    f.name,
                    self.ty(f.node),
                    if f.optional { " (optional)" } else { "" }
                )
            })
            .collect();
        parts.join(", ")
    }

    /// The definitions of the named types met so far (and those they refer to).
    fn definitions(&mut self) -> String {
        let mut out = String::new();
        let mut done = 0;
        while done < self.order.len() {
            let i = self.order[done];
            done += 1;
            let name = self.named[&i].clone();
            let def = match self.graph.node(i) {
                Some(Node::UnitStruct { .. }) => format!("struct {name};"),
                Some(Node::Newtype { inner, .. }) => format!("struct {name}({});", self.ty(*inner)),
                Some(Node::TupleStruct { fields, .. }) => {
                    let parts: Vec<String> = fields.iter().map(|c| self.ty(*c)).collect();
                    format!("struct {name}({});", parts.join(", "))
                }
                Some(Node::Struct { fields, .. }) => {
                    format!("struct {name} {{ {} }}", self.fields(fields))
                }
                Some(Node::Enum { variants, .. }) => {
                    let parts: Vec<String> = variants
                        .iter()
                        .map(|v| match &v.shape {
                            VariantShape::Unit => v.name.clone(),
                            VariantShape::Newtype(c) => format!("{}({})", v.name, self.ty(*c)),
                            VariantShape::Tuple(cs) => {
                                let p: Vec<String> = cs.iter().map(|c| self.ty(*c)).collect();
                                format!("{}({})", v.name, p.join(", "))
                            }
                            VariantShape::Struct(fs) => {
                                format!("{} {{ {} }}", v.name, self.fields(fs))
                            }
                        })
                        .collect();
                    format!("enum {name} {{ {} }}", parts.join(", "))
                }
                _ => continue,
            };
            let _ = writeln!(out, "  {def}");
        }
        out
    }
}

fn signature(r: &mut Render<'_>, m: &MethodSchema) -> String {
    // A method that takes an input stream has the stream's item as its last argument.
    let input = m.kind.takes_input().then(|| m.args.len().saturating_sub(1));
    let args: Vec<String> = m
        .args
        .iter()
        .enumerate()
        .map(|(i, a)| match input {
            Some(last) if i == last => format!("{}: Streaming<{}>", a.name, r.ty(a.node)),
            _ => format!("{}: {}", a.name, r.ty(a.node)),
        })
        .collect();
    let result = r.ty(m.result);
    let ret = if m.kind.streams_result() {
        format!(" -> Streaming<{result}>")
    } else if result == "()" {
        String::new()
    } else {
        format!(" -> {result}")
    };
    format!("fn {}({}){ret}", m.name, args.join(", "))
}

/// The text `hvrpc describe` prints.
pub(crate) fn describe_text(schemas: &[ServiceSchema]) -> String {
    let mut out = String::new();
    for s in schemas {
        let mut r = Render::new(&s.graph);
        let _ = writeln!(out, "service {}", s.name);
        for line in s.doc.lines() {
            let _ = writeln!(out, "  // {line}");
        }
        for m in &s.methods {
            for line in m.doc.lines() {
                let _ = writeln!(out, "  /// {line}");
            }
            let _ = writeln!(out, "  {}", signature(&mut r, m));
        }
        let defs = r.definitions();
        if !defs.is_empty() {
            let _ = writeln!(out, "types:");
            out.push_str(&defs);
        }
        out.push('\n');
    }
    out
}

/// The method's own error type, if its result (or stream item) is a `Result`.
fn result_parts(graph: &Graph, node: u32) -> Option<(u32, u32)> {
    match graph.node(node)? {
        Node::Enum { name, variants } if name == "Result" => match variants.as_slice() {
            [ok, err] if ok.name == "Ok" && err.name == "Err" => match (&ok.shape, &err.shape) {
                (VariantShape::Newtype(o), VariantShape::Newtype(e)) => Some((*o, *e)),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// The postcard bytes of the arguments given as JSON: an object by argument name, an array by
/// position, or nothing for a method without arguments.
fn encode_args(
    graph: &Graph,
    m: &MethodSchema,
    args: Option<&Value>,
) -> Result<Vec<u8>, CallFailure> {
    let limits = Limits::default();
    // The input stream's item (the last argument) comes from stdin, not from `args`.
    let m = &MethodSchema {
        args: m.args[..m.args.len() - usize::from(m.kind.takes_input())].to_vec(),
        ..m.clone()
    };
    let values: Vec<&Value> = match args {
        None | Some(Value::Null) if m.args.is_empty() => Vec::new(),
        Some(Value::Object(o)) => {
            if let Some(unknown) = o.keys().find(|k| !m.args.iter().any(|a| a.name == **k)) {
                let names: Vec<&str> = m.args.iter().map(|a| a.name.as_str()).collect();
                return Err(failure(
                    exit::CODEC,
                    format!(
                        ".args.{unknown}: {} has no such argument (it takes: {})",
                        m.name,
                        names.join(", ")
                    ),
                ));
            }
            let mut v = Vec::new();
            for a in &m.args {
                match o.get(&a.name) {
                    Some(x) => v.push(x),
                    None => {
                        return Err(failure(
                            exit::CODEC,
                            format!(".args.{}: missing argument", a.name),
                        ));
                    }
                }
            }
            v
        }
        Some(Value::Array(items)) if items.len() == m.args.len() => items.iter().collect(),
        other => {
            let names: Vec<&str> = m.args.iter().map(|a| a.name.as_str()).collect();
            return Err(failure(
                exit::CODEC,
                format!(
                    ".args: {} takes ({}): give an object by name or an array of {}, got {}",
                    m.name,
                    names.join(", "),
                    m.args.len(),
                    other.map_or_else(|| "nothing".to_owned(), |v| v.to_string())
                ),
            ));
        }
    };
    let mut out = Vec::new();
    for (a, v) in m.args.iter().zip(values) {
        let bytes = from_json(v, graph, a.node, &format!(".args.{}", a.name), limits)
            .map_err(|e| failure(exit::CODEC, e.to_string()))?;
        out.extend(bytes);
    }
    Ok(out)
}

/// Prints a value as JSON, pretty unless `compact`. A reader that went away (`| head`) ends
/// the call quietly (exit status 0).
fn print(v: &Value, compact: bool, to_stderr: bool) -> Result<(), CallFailure> {
    use std::io::Write as _;
    let text = if compact {
        v.to_string()
    } else {
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    };
    let written = if to_stderr {
        writeln!(std::io::stderr(), "{text}")
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}").and_then(|()| out.flush())
    };
    written.map_err(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => failure(0, String::new()),
        _ => failure(1, format!("writing the result: {e}")),
    })
}

/// A result or item: printed, or (the method's own error) printed on stderr and failed.
fn emit(
    graph: &Graph,
    node: u32,
    bytes: &[u8],
    path: &str,
    compact: bool,
) -> Result<(), CallFailure> {
    let limits = Limits::default();
    let v = to_json(bytes, graph, node, path, limits)
        .map_err(|e| failure(exit::CODEC, e.to_string()))?;
    if result_parts(graph, node).is_some()
        && let Value::Object(o) = &v
    {
        if let Some(ok) = o.get("Ok") {
            return print(ok, compact, false);
        }
        if let Some(err) = o.get("Err") {
            print(err, compact, true)?;
            return Err(failure(exit::APPLICATION, String::new()));
        }
    }
    print(&v, compact, false)
}

/// `hvrpc call`. `args` is the JSON text of the arguments, or `-` to read it from stdin; a
/// method that takes an input stream reads its items from stdin instead, one JSON value a line.
pub(crate) async fn call(
    endpoint: &Endpoint,
    target: &str,
    args: Option<String>,
    timeout: Duration,
    explicit: bool,
    compact: bool,
) -> Result<(), CallFailure> {
    // A stream (or an upload from stdin) runs until it ends or Ctrl-C, unless the user gave a
    // timeout: then it is the call's deadline too.
    let stream_deadline = explicit.then_some(timeout);
    let Some((service, method)) = target.rsplit_once('.') else {
        return Err(failure(2, format!("{target:?}: expected Service.method")));
    };
    let conn = connect(endpoint, timeout).await?;
    let schemas = schemas(endpoint, &conn).await?;
    let Some(s) = schemas.iter().find(|s| s.name == service) else {
        let names: Vec<&str> = schemas.iter().map(|s| s.name.as_str()).collect();
        return Err(failure(
            exit::REMOTE,
            format!(
                "{endpoint} does not serve {service} (it serves: {})",
                names.join(", ")
            ),
        ));
    };
    let Some(m) = s.method(method) else {
        let names: Vec<&str> = s.methods.iter().map(|m| m.name.as_str()).collect();
        return Err(failure(
            exit::REMOTE,
            format!(
                "{service} has no method {method} (it has: {})",
                names.join(", ")
            ),
        ));
    };
    let args = parse_args(args, m)?;
    let bytes = encode_args(&s.graph, m, args.as_ref())?;
    let input = || {
        let item = m.args.last().map_or(0, |a| a.node);
        stdin_items(s.graph.clone(), item)
    };
    match m.kind {
        MethodKind::Unary => {
            let result = conn
                .call_raw(service, method, bytes.into(), Some(timeout))
                .await
                .map_err(|e| from_error(endpoint, &e))?;
            emit(&s.graph, m.result, &result, ".result", compact)
        }
        MethodKind::ClientStream => {
            let call =
                conn.client_stream_raw(service, method, bytes.into(), input(), stream_deadline);
            let ctrl_c = tokio::signal::ctrl_c();
            tokio::select! {
                result = call => {
                    let result = result.map_err(|e| from_error(endpoint, &e))?;
                    emit(&s.graph, m.result, &result, ".result", compact)
                }
                // Dropping the call cancels it on the server.
                _ = ctrl_c => Err(interrupted().await),
            }
        }
        MethodKind::ServerStream => {
            let stream = conn
                .stream_raw(service, method, bytes.into(), stream_deadline)
                .map_err(|e| from_error(endpoint, &e))?;
            print_items(endpoint, &s.graph, m.result, stream).await
        }
        MethodKind::BidiStream => {
            let stream = conn
                .bidi_raw(service, method, bytes.into(), input(), stream_deadline)
                .map_err(|e| from_error(endpoint, &e))?;
            print_items(endpoint, &s.graph, m.result, stream).await
        }
    }
}

/// The arguments' JSON: from the command line, or from stdin for `-` (unless stdin carries
/// the method's input stream).
fn parse_args(args: Option<String>, m: &MethodSchema) -> Result<Option<Value>, CallFailure> {
    let text = match args {
        Some(a) if a == "-" && m.kind.takes_input() => {
            return Err(failure(
                2,
                format!(
                    "{} reads its input stream from stdin (one JSON value a line): give its \
                     other arguments on the command line",
                    m.name
                ),
            ));
        }
        Some(a) if a == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| failure(1, format!("reading the arguments from stdin: {e}")))?;
            s
        }
        Some(a) => a,
        None => return Ok(None),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| failure(exit::CODEC, format!("the arguments are not JSON: {e}")))
}

/// The items of an input stream: stdin's lines (blank ones skipped), each a JSON value of
/// node `item`, encoded to postcard; read only as fast as the server takes them. A line that
/// is not such a value fails the call, naming it (`.input[3]: expected u32, got "x"`).
fn stdin_items(
    graph: Graph,
    item: u32,
) -> impl futures_util::Stream<Item = Result<hvrpc::Bytes, Error>> + Send + 'static {
    use tokio::io::AsyncBufReadExt as _;
    let lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    futures_util::stream::unfold((lines, 0usize), move |(mut lines, n)| {
        let graph = graph.clone();
        async move {
            let line = loop {
                match lines.next_line().await {
                    Ok(Some(l)) if l.trim().is_empty() => {}
                    Ok(Some(l)) => break l,
                    Ok(None) => return None,
                    Err(e) => {
                        let e = Error::Encode(format!("reading the input from stdin: {e}").into());
                        return Some((Err(e), (lines, n)));
                    }
                }
            };
            let path = format!(".input[{n}]");
            let item = serde_json::from_str::<Value>(&line)
                .map_err(|e| format!("{path}: not JSON: {e}"))
                .and_then(|v| {
                    from_json(&v, &graph, item, &path, Limits::default()).map_err(|e| e.to_string())
                })
                .map(hvrpc::Bytes::from)
                .map_err(|e| Error::Encode(e.into()));
            Some((item, (lines, n + 1)))
        }
    })
}

/// Prints a result stream, one JSON line per item, until it ends or Ctrl-C (which cancels
/// the call on the server).
async fn print_items(
    endpoint: &Endpoint,
    graph: &Graph,
    node: u32,
    mut stream: hvrpc::RawStreaming,
) -> Result<(), CallFailure> {
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut n = 0usize;
    loop {
        tokio::select! {
            item = stream.next() => match item {
                None => return Ok(()),
                Some(Ok(b)) => {
                    // Items one per line, whatever --compact says.
                    emit(graph, node, &b, &format!(".items[{n}]"), true)?;
                    n += 1;
                }
                Some(Err(e)) => return Err(from_error(endpoint, &e)),
            },
            _ = &mut ctrl_c => {
                // Dropping the stream cancels the call on the server.
                drop(stream);
                return Err(interrupted().await);
            }
        }
    }
}

/// Ctrl-C: gives the Cancel a moment to leave before the process exits.
async fn interrupted() -> CallFailure {
    tokio::time::sleep(Duration::from_millis(50)).await;
    failure(exit::INTERRUPTED, "interrupted: the call was cancelled")
}

#[cfg(test)]
#[path = "dynamic_tests.rs"]
mod tests;
