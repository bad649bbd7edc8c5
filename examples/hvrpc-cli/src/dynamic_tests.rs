//! Rendering what a hostile peer describes.

use hvrpc::schema::{Arg, Graph, MethodKind, MethodSchema, Node, ServiceSchema, VariantShape};

fn service(nodes: Vec<Node>) -> ServiceSchema {
    ServiceSchema {
        name: "Evil".into(),
        doc: String::new(),
        methods: vec![MethodSchema {
            name: "loop".into(),
            doc: String::new(),
            kind: MethodKind::Unary,
            args: vec![Arg {
                name: "x".into(),
                node: 0,
            }],
            result: 0,
        }],
        graph: Graph { nodes },
    }
}

#[test]
fn a_type_that_contains_itself_unnamed_renders_bounded() {
    // No Rust type is `Option` of itself; a peer can still say so.
    let text = super::describe_text(&[service(vec![Node::Option(0)])]);
    assert!(text.contains("fn loop(x: Option<Option<"), "{text}");
    assert!(text.contains('…'), "{text}");
    assert!(text.len() < 4096, "{} bytes", text.len());
}

#[test]
fn a_result_of_itself_renders_bounded() {
    // "Result" is rendered inline, not by name: a loop through it must stop too.
    let nodes = vec![Node::Enum {
        name: "Result".into(),
        variants: vec![
            hvrpc::schema::Variant {
                name: "Ok".into(),
                shape: VariantShape::Newtype(0),
            },
            hvrpc::schema::Variant {
                name: "Err".into(),
                shape: VariantShape::Newtype(0),
            },
        ],
    }];
    let text = super::describe_text(&[service(nodes)]);
    assert!(text.contains('…'), "{text}");
}

#[test]
fn a_graph_shaped_to_explode_renders_bounded() {
    // Each node a pair of the next: 2^40 leaves if rendered in full.
    let mut nodes: Vec<Node> = (1..=40u32).map(|i| Node::Tuple(vec![i, i])).collect();
    nodes.push(Node::U8);
    let text = super::describe_text(&[service(nodes)]);
    assert!(text.len() < 4 << 20, "{} bytes", text.len());
}
