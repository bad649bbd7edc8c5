//! Parsing `#[hvrpc::service(...)] trait …` into [`ServiceDef`], with an error pointing at
//! the offending token for everything unsupported.

use proc_macro2::{Span, TokenStream};
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemTrait, LitInt, LitStr, Pat, Path, PathArguments,
    ReturnType, TraitItem, Type, Visibility,
};

/// Names the generated client defines itself, or takes from the traits it implements (an
/// inherent method would shadow them: `client.clone()` would call the RPC); an RPC method may
/// not take them.
pub(crate) const RESERVED: &[&str] = &[
    "new",
    "connect",
    "connect_with",
    "connect_parent",
    "with_options",
    "with_timeout",
    "channel",
    "peer_supports",
    // Clone, Debug, ServiceDef, Client.
    "clone",
    "clone_from",
    "fmt",
    "spec",
    "from_channel",
];

pub(crate) enum Identity {
    Port(u32),
    Guid(u128),
}

pub(crate) struct ServiceDef {
    pub(crate) krate: Path,
    pub(crate) identity: Identity,
    pub(crate) name: String,
    pub(crate) vis: Visibility,
    pub(crate) ident: Ident,
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) methods: Vec<Method>,
}

pub(crate) enum Output {
    /// `-> T`
    Plain(Type),
    /// `-> Result<T, E>` (or an alias of one, marked `#[hvrpc(result)]`): `E` travels typed
    /// to the caller.
    Result {
        ok: Box<Type>,
        err: Box<Type>,
        full: Box<Type>,
    },
    /// `#[hvrpc(result)] -> R<T>`: a `Result` behind an alias; its parts are named through
    /// the runtime's `ResultParts`.
    AliasedResult(Type),
    /// `-> Streaming<T>`
    Streaming(Type),
}

pub(crate) struct Method {
    /// The method's attributes, without hvrpc's own.
    pub(crate) attrs: Vec<Attribute>,
    /// `#[hvrpc(blocking)]`: the handler runs on a thread for blocking work.
    pub(crate) blocking: bool,
    /// The predicates of the method's `#[cfg(…)]` attributes (all must hold for it to exist).
    pub(crate) cfgs: Vec<TokenStream>,
    /// Its doc comment's text.
    pub(crate) doc: String,
    pub(crate) ident: Ident,
    pub(crate) args: Vec<(Ident, Type)>,
    /// `name: Streaming<T>` as the last argument: the caller's input stream of `T` (a
    /// client-streaming method, or bidirectional if it also returns a stream). Not in `args`.
    pub(crate) input: Option<(Ident, Type)>,
    pub(crate) output: Output,
}

fn err<T>(span: Span, msg: impl std::fmt::Display) -> syn::Result<T> {
    Err(syn::Error::new(span, msg))
}

pub(crate) fn parse(attr: TokenStream, item: TokenStream) -> syn::Result<ServiceDef> {
    let mut port: Option<(u32, Span)> = None;
    let mut id: Option<(u128, Span)> = None;
    let mut name: Option<String> = None;
    let mut krate: Option<Path> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("port") {
            let lit: LitInt = meta.value()?.parse()?;
            let value = lit.base10_parse::<u32>().map_err(|_| {
                syn::Error::new(
                    lit.span(),
                    "`port` must be a vsock port: an integer from 0 to 4294967295",
                )
            })?;
            port = Some((value, meta.path.span()));
            Ok(())
        } else if meta.path.is_ident("id") {
            let lit: LitStr = meta.value()?.parse()?;
            let value = parse_guid(&lit.value()).ok_or_else(|| {
                syn::Error::new(
                    lit.span(),
                    "`id` must be a GUID such as \"6c4eb1be-40e8-4c8b-a4d6-5b0f67d7e40f\" (braces optional)",
                )
            })?;
            id = Some((value, meta.path.span()));
            Ok(())
        } else if meta.path.is_ident("name") {
            let lit: LitStr = meta.value()?.parse()?;
            if lit.value().is_empty() {
                return err(lit.span(), "`name` must not be empty");
            }
            name = Some(lit.value());
            Ok(())
        } else if meta.path.is_ident("crate") {
            let lit: LitStr = meta.value()?.parse()?;
            krate = Some(lit.parse()?);
            Ok(())
        } else {
            Err(meta.error("unknown option: expected `port = …`, `id = \"…\"`, `name = \"…\"` or `crate = \"…\"`"))
        }
    });
    syn::parse::Parser::parse2(parser, attr.clone())?;
    let identity = match (port, id) {
        (Some((p, _)), None) => Identity::Port(p),
        (None, Some((g, _))) => Identity::Guid(g),
        (Some(_), Some((_, span))) => {
            return err(span, "give either `port` or `id`, not both");
        }
        (None, None) => {
            return err(
                if attr.is_empty() {
                    Span::call_site()
                } else {
                    attr.span()
                },
                "missing service identity: add `port = <vsock port>` (reaches Linux and Windows \
                 guests) or `id = \"<GUID>\"` (Windows only)",
            );
        }
    };

    let item: ItemTrait = syn::parse2(item)?;
    if let Some(unsafety) = &item.unsafety {
        return err(unsafety.span(), "service traits cannot be `unsafe`");
    }
    if let Some(auto) = &item.auto_token {
        return err(auto.span(), "service traits cannot be `auto`");
    }
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        return err(item.generics.span(), "service traits cannot be generic");
    }
    if let Some(colon) = &item.colon_token {
        return err(colon.span(), "service traits cannot have supertraits");
    }
    let mut methods = Vec::new();
    for it in &item.items {
        methods.push(parse_method(it)?);
    }
    for (i, m) in methods.iter().enumerate() {
        if methods.iter().take(i).any(|o| o.ident == m.ident) {
            return err(m.ident.span(), format!("duplicate method `{}`", m.ident));
        }
    }
    Ok(ServiceDef {
        krate: krate.unwrap_or_else(|| syn::parse_quote!(::hvrpc)),
        identity,
        name: name.unwrap_or_else(|| item.ident.to_string()),
        vis: item.vis.clone(),
        ident: item.ident.clone(),
        attrs: item.attrs.clone(),
        methods,
    })
}

fn parse_method(item: &TraitItem) -> syn::Result<Method> {
    let TraitItem::Fn(f) = item else {
        return err(
            item.span(),
            "service traits may contain only `async fn` methods",
        );
    };
    let sig = &f.sig;
    if sig.asyncness.is_none() {
        return err(sig.fn_token.span(), "RPC methods must be `async fn`");
    }
    if let Some(block) = &f.default {
        return err(block.span(), "RPC methods cannot have a default body");
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return err(sig.generics.span(), "RPC methods cannot be generic");
    }
    if let Some(c) = &sig.constness {
        return err(c.span(), "RPC methods cannot be `const`");
    }
    if let Some(u) = &sig.unsafety {
        return err(u.span(), "RPC methods cannot be `unsafe`");
    }
    if let Some(v) = &sig.variadic {
        return err(v.span(), "RPC methods cannot be variadic");
    }
    let ident = sig.ident.clone();
    let name = ident.to_string();
    if RESERVED.contains(&name.as_str()) {
        return err(
            ident.span(),
            format!(
                "method name `{name}` collides with a method of the generated client; rename it"
            ),
        );
    }
    if name.starts_with("__") {
        return err(ident.span(), "method names starting with `__` are reserved");
    }
    let mut args = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                return err(
                    r.span(),
                    "RPC methods take no `self`: the generated server trait adds `&self` and the \
                     call's `hvrpc::Context`",
                );
            }
            FnArg::Typed(pt) => {
                let Pat::Ident(pi) = &*pt.pat else {
                    return err(
                        pt.pat.span(),
                        "patterns aren't allowed in RPC arguments: use a plain name",
                    );
                };
                if pi.by_ref.is_some() || pi.mutability.is_some() || pi.subpat.is_some() {
                    return err(
                        pt.pat.span(),
                        "patterns aren't allowed in RPC arguments: use a plain name",
                    );
                }
                if pi.ident == "ctx" {
                    return err(
                        pi.ident.span(),
                        "`ctx` is reserved for the call's `hvrpc::Context`; rename the argument",
                    );
                }
                if let Type::Reference(r) = &*pt.ty {
                    return err(
                        r.span(),
                        "RPC arguments must be owned types (they are decoded from the wire)",
                    );
                }
                if let Type::ImplTrait(t) = &*pt.ty {
                    return err(
                        t.span(),
                        "`impl Trait` arguments aren't allowed in RPC methods",
                    );
                }
                args.push((pi.ident.clone(), (*pt.ty).clone()));
            }
        }
    }
    // An input stream is the last argument, and there is at most one.
    let mut input = None;
    for (i, (n, t)) in args.iter().enumerate() {
        if let Some(items) = last_segment_args(t, "Streaming") {
            if i + 1 != args.len() {
                return err(
                    t.span(),
                    "an input stream (`Streaming<T>`) must be the method's last argument, and \
                     a method takes at most one",
                );
            }
            let [item] = items.as_slice() else {
                return err(t.span(), "`Streaming` takes one type: `Streaming<T>`");
            };
            input = Some((n.clone(), (*item).clone()));
        }
    }
    if input.is_some() {
        args.pop();
    }
    let ret: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, t) => (**t).clone(),
    };
    if let Type::ImplTrait(t) = &ret {
        return err(
            t.span(),
            "`impl Trait` return types aren't allowed in RPC methods",
        );
    }
    let (attrs, opts) = method_options(&f.attrs)?;
    let output = if opts.result {
        if let Output::Streaming(_) = classify(&ret) {
            return err(
                sig.ident.span(),
                "`#[hvrpc(result)]` marks a `Result` spelled through an alias; this returns a stream",
            );
        }
        Output::AliasedResult(ret.clone())
    } else {
        classify(&ret)
    };
    let blocking = opts.blocking;
    let cfgs = attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .map(|a| a.parse_args::<TokenStream>())
        .collect::<syn::Result<Vec<_>>>()?;
    let doc = doc_text(&attrs);
    if blocking && let Output::Streaming(_) = output {
        return err(
            sig.ident.span(),
            "`#[hvrpc(blocking)]` is for unary methods: a stream's producer already runs in a \
             task of its own (do blocking work there with `tokio::task::spawn_blocking`)",
        );
    }
    Ok(Method {
        attrs,
        blocking,
        cfgs,
        doc,
        ident,
        args,
        input,
        output,
    })
}

/// The item with hvrpc's own method options (`#[hvrpc(…)]`) taken out, as emitted beside a
/// compile error: the rest still compiles without them.
pub(crate) fn without_options(item: TokenStream) -> TokenStream {
    let Ok(mut t) = syn::parse2::<ItemTrait>(item.clone()) else {
        return item;
    };
    for it in &mut t.items {
        if let TraitItem::Fn(f) = it {
            f.attrs.retain(|a| !a.path().is_ident("hvrpc"));
        }
    }
    quote::quote!(#t)
}

/// hvrpc's own method options.
#[derive(Default)]
struct Options {
    /// `#[hvrpc(blocking)]`
    blocking: bool,
    /// `#[hvrpc(result)]`
    result: bool,
}

/// Splits hvrpc's own method options (`#[hvrpc(blocking)]`, `#[hvrpc(result)]`) from the
/// other attributes.
fn method_options(attrs: &[Attribute]) -> syn::Result<(Vec<Attribute>, Options)> {
    let mut opts = Options::default();
    let mut rest = Vec::new();
    for a in attrs {
        if !a.path().is_ident("hvrpc") {
            rest.push(a.clone());
            continue;
        }
        a.parse_nested_meta(|meta| {
            if meta.path.is_ident("blocking") {
                opts.blocking = true;
                Ok(())
            } else if meta.path.is_ident("result") {
                opts.result = true;
                Ok(())
            } else {
                Err(meta.error("unknown method option: expected `blocking` or `result`"))
            }
        })?;
    }
    Ok((rest, opts))
}

/// The text of the `#[doc = "…"]` attributes, one line each, the leading space of `///`
/// comments removed.
pub(crate) fn doc_text(attrs: &[Attribute]) -> String {
    let mut lines = Vec::new();
    for a in attrs {
        if !a.path().is_ident("doc") {
            continue;
        }
        if let syn::Meta::NameValue(nv) = &a.meta
            && let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) = &nv.value
        {
            let v = s.value();
            lines.push(v.strip_prefix(' ').map(str::to_owned).unwrap_or(v));
        }
    }
    lines.join("\n").trim().to_owned()
}

/// The generic arguments of `ty`'s last path segment if it is named `name`.
pub(crate) fn last_segment_args<'a>(ty: &'a Type, name: &str) -> Option<Vec<&'a Type>> {
    let Type::Path(tp) = ty else { return None };
    if tp.qself.is_some() {
        return None;
    }
    let seg = tp.path.segments.last()?;
    if seg.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(ab) = &seg.arguments else {
        return None;
    };
    Some(
        ab.args
            .iter()
            .filter_map(|a| match a {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
    )
}

fn classify(ret: &Type) -> Output {
    if let Some(args) = last_segment_args(ret, "Streaming")
        && let [item] = args.as_slice()
    {
        return Output::Streaming((*item).clone());
    }
    if let Some(args) = last_segment_args(ret, "Result")
        && let [ok, e] = args.as_slice()
    {
        return Output::Result {
            ok: Box::new((*ok).clone()),
            err: Box::new((*e).clone()),
            full: Box::new(ret.clone()),
        };
    }
    Output::Plain(ret.clone())
}

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, braces optional, any case.
fn parse_guid(s: &str) -> Option<u128> {
    let inner = match s.strip_prefix('{') {
        Some(rest) => rest.strip_suffix('}')?,
        None => s,
    };
    let groups: Vec<&str> = inner.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens != [8, 4, 4, 4, 12]
        || !groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    u128::from_str_radix(&groups.concat(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_parsing() {
        assert_eq!(
            parse_guid("{A42E7CDA-D03F-480C-9CC2-A4DE20ABB878}"),
            Some(0xa42e7cda_d03f_480c_9cc2_a4de20abb878)
        );
        assert_eq!(
            parse_guid("a42e7cda-d03f-480c-9cc2-a4de20abb878"),
            Some(0xa42e7cda_d03f_480c_9cc2_a4de20abb878)
        );
        for bad in [
            "",
            "a42e7cdad03f480c9cc2a4de20abb878",
            "a42e7cda-d03f-480c-9cc2-a4de20abb87g",
            "{a42e7cda-d03f-480c-9cc2-a4de20abb878",
        ] {
            assert_eq!(parse_guid(bad), None, "{bad}");
        }
    }
}
