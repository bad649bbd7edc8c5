//! Code generation: one method per generated item. Generated code names the runtime only
//! through `<crate>::__private`, with fully qualified paths, so it works under
//! `#![no_implicit_prelude]`, with a renamed dependency, and through re-exports.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, LitStr};

use crate::parse::{Identity, Method, Output, ServiceDef};

pub(crate) fn expand(def: &ServiceDef) -> TokenStream {
    let g = Generator::new(def);
    let server_trait = g.server_trait();
    let client = g.client();
    let server = g.server();
    let checks = g.wire_checks();
    quote! {
        #checks
        #server_trait
        #client
        #server
    }
}

struct Generator<'a> {
    def: &'a ServiceDef,
    /// `<crate>::__private`
    rt: TokenStream,
    client: Ident,
    server: Ident,
}

impl<'a> Generator<'a> {
    fn new(def: &'a ServiceDef) -> Self {
        let krate = &def.krate;
        Self {
            def,
            rt: quote!(#krate::__private),
            client: format_ident!("{}Client", def.ident),
            server: format_ident!("{}Server", def.ident),
        }
    }

    /// `#[cfg(…)]` of method `m`, for every item generated for it.
    fn cfg_attrs(m: &Method) -> TokenStream {
        let cfgs = &m.cfgs;
        quote!(#(#[cfg(#cfgs)])*)
    }

    /// Whether method `m` exists in this build, as a constant expression.
    fn present(m: &Method) -> TokenStream {
        let cfgs = &m.cfgs;
        if cfgs.is_empty() {
            quote!(true)
        } else {
            quote!(::core::cfg!(all(#(#cfgs),*)))
        }
    }

    /// The number of method `k` on the wire: how many methods before it exist in this build
    /// (methods under `#[cfg(…)]` may not), as a constant expression.
    fn index_expr(&self, k: usize) -> TokenStream {
        let before = self.def.methods.iter().take(k).map(Self::present);
        quote!((0u32 #(+ (#before as u32))*))
    }

    /// The argument tuple's type as traced and translated: byte strings as `Vec<u8>` (the
    /// same bytes on the wire).
    fn wire_args(m: &Method) -> TokenStream {
        let tys = m.args.iter().map(|(_, t)| {
            if is_byte_string(t) {
                quote!(::std::vec::Vec<u8>)
            } else {
                quote!(#t)
            }
        });
        quote!((#(#tys,)*))
    }

    /// The argument tuple as traced into the method's schema: the request's arguments, then
    /// (a method taking an input stream) the input's item type, byte strings as `Vec<u8>`.
    fn trace_args(m: &Method) -> TokenStream {
        let wire = |t: &syn::Type| {
            if is_byte_string(t) {
                quote!(::std::vec::Vec<u8>)
            } else {
                quote!(#t)
            }
        };
        let tys = m
            .args
            .iter()
            .map(|(_, t)| t)
            .chain(m.input.as_ref().map(|(_, t)| t))
            .map(wire);
        quote!((#(#tys,)*))
    }

    /// The result's type as traced: a stream's item; byte strings as `Vec<u8>`.
    fn wire_result(m: &Method) -> TokenStream {
        match &m.output {
            Output::Plain(t) if is_byte_string(t) => quote!(::std::vec::Vec<u8>),
            Output::Plain(t) | Output::Streaming(t) | Output::AliasedResult(t) => quote!(#t),
            Output::Result { full, .. } => quote!(#full),
        }
    }

    /// One check per argument and result type, spanned at the type, so that a type without
    /// serde's traits is reported there, saying what to derive (rustc's own errors about the
    /// generated code follow it).
    fn wire_checks(&self) -> TokenStream {
        let rt = &self.rt;
        let mut tys: Vec<&syn::Type> = Vec::new();
        for m in &self.def.methods {
            tys.extend(m.args.iter().map(|(_, t)| t));
            tys.extend(m.input.as_ref().map(|(_, t)| t));
            match &m.output {
                Output::Plain(t) | Output::Streaming(t) | Output::AliasedResult(t) => tys.push(t),
                Output::Result { ok, err, .. } => {
                    tys.push(ok);
                    tys.push(err);
                }
            }
        }
        let checks = tys
            .iter()
            .map(|t| quote_spanned!(t.span()=> #rt::wire_type::<#t>();));
        quote! {
            const _: () = {
                #[allow(dead_code)]
                fn __hvrpc_wire_types() {
                    #(#checks)*
                }
            };
        }
    }

    /// The client's (and server's) `spec()`: the methods traced once, on first use.
    fn spec_fn(&self) -> TokenStream {
        let rt = &self.rt;
        let name = LitStr::new(&self.def.name, proc_macro2::Span::call_site());
        let doc = crate::parse::doc_text(&self.def.attrs);
        let defs = self.def.methods.iter().map(|m| {
            let cfg = Self::cfg_attrs(m);
            let mname = LitStr::new(&m.ident.to_string(), m.ident.span());
            let mdoc = &m.doc;
            let kind = match (&m.output, &m.input) {
                (Output::Streaming(_), Some(_)) => quote!(#rt::MethodKind::BidiStream),
                (Output::Streaming(_), None) => quote!(#rt::MethodKind::ServerStream),
                (_, Some(_)) => quote!(#rt::MethodKind::ClientStream),
                _ => quote!(#rt::MethodKind::Unary),
            };
            let arg_names = m
                .args
                .iter()
                .chain(&m.input)
                .map(|(n, _)| LitStr::new(&n.to_string(), n.span()));
            let args = Self::trace_args(m);
            let result = Self::wire_result(m);
            quote! {
                #cfg
                defs.push(#rt::MethodDef {
                    name: #mname,
                    doc: #mdoc,
                    kind: #kind,
                    args: &[#(#arg_names),*],
                    trace: #rt::trace_method::<#args, #result>,
                });
            }
        });
        quote! {
            fn spec() -> ::core::result::Result<
                ::std::sync::Arc<#rt::ServiceSpec>,
                ::std::sync::Arc<str>,
            > {
                static SPEC: #rt::SpecCell = #rt::SpecCell::new();
                SPEC.get(#name, #doc, || {
                    #[allow(unused_mut)]
                    let mut defs = ::std::vec::Vec::new();
                    #(#defs)*
                    defs
                })
            }
        }
    }

    fn id_expr(&self) -> TokenStream {
        let rt = &self.rt;
        match self.def.identity {
            Identity::Port(p) => quote!(#rt::ServiceId::from_vsock_port(#p)),
            Identity::Guid(g) => quote!(#rt::ServiceId::from_u128(#g)),
        }
    }

    fn identity_doc(&self) -> String {
        match self.def.identity {
            Identity::Port(p) => format!(
                "Served on vsock port {p} (0x{p:x}): Hyper-V service id \
                 `{p:08x}-facb-11e6-bd58-64006a7986d3`. Reachable from Linux and Windows guests."
            ),
            Identity::Guid(g) => format!(
                "Served under the Hyper-V service id `{}`. **Windows only**: Linux guests reach \
                 only vsock-port services (`port = …`).",
                format_guid(g)
            ),
        }
    }

    fn server_trait(&self) -> TokenStream {
        let rt = &self.rt;
        let ServiceDef {
            vis, ident, attrs, ..
        } = self.def;
        let methods = self.def.methods.iter().map(|m| {
            let Method {
                attrs, ident, args, ..
            } = m;
            let input = m.input.iter().map(|(n, t)| quote!(#n: #rt::Streaming<#t>));
            let args = args.iter().map(|(n, t)| quote!(#n: #t)).chain(input);
            let ret = self.server_return(m);
            quote! {
                #(#attrs)*
                fn #ident(&self, ctx: #rt::Context, #(#args),*)
                    -> impl ::core::future::Future<Output = #ret> + ::core::marker::Send;
            }
        });
        let client = &self.client;
        let server = &self.server;
        let doc = format!(
            "\n\nImplement this trait to serve the service; wrap the implementation in \
             [`{server}`] and add it to an `hvrpc::Server`. Call it with [`{client}`]."
        );
        quote! {
            #(#attrs)*
            #[doc = #doc]
            #vis trait #ident: ::core::marker::Send + ::core::marker::Sync + 'static {
                #(#methods)*
            }
        }
    }

    fn server_return(&self, m: &Method) -> TokenStream {
        let rt = &self.rt;
        match &m.output {
            Output::Plain(t) => quote!(#t),
            Output::Result { full, .. } => quote!(#full),
            Output::AliasedResult(t) => quote!(#t),
            Output::Streaming(t) => quote!(#rt::Streaming<#t>),
        }
    }

    fn consts(&self) -> TokenStream {
        let rt = &self.rt;
        let name = LitStr::new(&self.def.name, proc_macro2::Span::call_site());
        let id = self.id_expr();
        let methods: Vec<LitStr> = self
            .def
            .methods
            .iter()
            .map(|m| LitStr::new(&m.ident.to_string(), m.ident.span()))
            .collect();
        let list = if self.def.methods.iter().all(|m| m.cfgs.is_empty()) {
            quote!(&[#(#methods),*])
        } else {
            // Only the methods that exist in this build, worked out at compile time.
            let present = self.def.methods.iter().map(Self::present);
            let n = methods.len();
            quote! {{
                const ALL: [(&str, bool); #n] = [#((#methods, #present)),*];
                const COUNT: usize = {
                    let mut n = 0;
                    let mut i = 0;
                    while i < #n {
                        if ALL[i].1 {
                            n += 1;
                        }
                        i += 1;
                    }
                    n
                };
                const PRESENT: [&str; COUNT] = {
                    let mut out = [""; COUNT];
                    let (mut i, mut j) = (0, 0);
                    while i < #n {
                        if ALL[i].1 {
                            out[j] = ALL[i].0;
                            j += 1;
                        }
                        i += 1;
                    }
                    out
                };
                &PRESENT
            }}
        };
        quote! {
            const NAME: &'static str = #name;
            const ID: #rt::ServiceId = #id;
            const METHODS: &'static [&'static str] = #list;
        }
    }

    fn client(&self) -> TokenStream {
        let rt = &self.rt;
        let vis = &self.def.vis;
        let client = &self.client;
        let trait_name = &self.def.ident;
        let consts = self.consts();
        let spec = self.spec_fn();
        let doc = format!(
            "The client of [`{trait_name}`]. Cheap to clone; every clone shares the connection.\n\n{}",
            self.identity_doc()
        );
        let methods = self
            .def
            .methods
            .iter()
            .enumerate()
            .map(|(i, m)| self.client_method(i, m));
        quote! {
            #[doc = #doc]
            #[derive(::core::clone::Clone, ::core::fmt::Debug)]
            #vis struct #client {
                channel: #rt::Channel,
                options: #rt::CallOptions,
            }

            impl #rt::ServiceDef for #client {
                #consts
                #spec
            }

            impl #rt::Client for #client {
                fn from_channel(channel: #rt::Channel) -> Self {
                    Self::new(channel)
                }
            }

            impl #client {
                /// A client using `channel` (or a `Connection`).
                #vis fn new(channel: impl ::core::convert::Into<#rt::Channel>) -> Self {
                    Self {
                        channel: ::core::convert::Into::into(channel),
                        options: ::core::default::Default::default(),
                    }
                }

                /// Connects to `endpoint` with the default configuration; the connection is
                /// re-dialled if it breaks.
                #vis async fn connect(
                    endpoint: &#rt::Endpoint,
                ) -> ::core::result::Result<Self, #rt::Error> {
                    Self::connect_with(endpoint, #rt::Connector::new()).await
                }

                /// Connects to `endpoint` with `connector`'s configuration (and the services
                /// it serves back to the peer).
                #vis async fn connect_with(
                    endpoint: &#rt::Endpoint,
                    connector: #rt::Connector,
                ) -> ::core::result::Result<Self, #rt::Error> {
                    let channel = connector.want::<Self>().connect(endpoint).await?;
                    ::core::result::Result::Ok(Self::new(channel))
                }

                /// Connects to the service in the parent partition (from a VM, the host):
                /// `hvsock://parent/…` on Windows, `vsock://host:…` in a Linux guest.
                #vis async fn connect_parent() -> ::core::result::Result<Self, #rt::Error> {
                    let endpoint = #rt::Endpoint::Parent(<Self as #rt::ServiceDef>::ID);
                    Self::connect(&endpoint).await
                }

                /// A client whose calls use `options`.
                #vis fn with_options(&self, options: #rt::CallOptions) -> Self {
                    Self {
                        channel: ::core::clone::Clone::clone(&self.channel),
                        options,
                    }
                }

                /// A client whose calls have a deadline of `timeout` (sent to the server as a
                /// relative duration).
                #vis fn with_timeout(&self, timeout: #rt::Duration) -> Self {
                    self.with_options(self.options.timeout(timeout))
                }

                /// The channel this client uses.
                #vis fn channel(&self) -> &#rt::Channel {
                    &self.channel
                }

                /// Whether the peer (connected to first, if need be) has `method` in a release
                /// this side can call: a host adapting to older guests asks before using a
                /// newer method. A method it lacks fails with `Error::Unimplemented`, one whose
                /// schemas conflict with `Error::Incompatible`.
                #vis async fn peer_supports(
                    &self,
                    method: &str,
                ) -> ::core::result::Result<bool, #rt::Error> {
                    let conn = self.channel.connection().await?;
                    ::core::result::Result::Ok(conn.peer_supports::<Self>(method))
                }

                #(#methods)*
            }
        }
    }

    fn client_method(&self, index: usize, m: &Method) -> TokenStream {
        let rt = &self.rt;
        let vis = &self.def.vis;
        let Method {
            attrs, ident, args, ..
        } = m;
        let index = self.index_expr(index);
        let cfg = Self::cfg_attrs(m);
        let input_param = m.input.iter().map(|(n, t)| quote!(#n: #rt::Streaming<#t>));
        let params = args.iter().map(|(n, t)| quote!(#n: #t)).chain(input_param);
        // Byte strings (`Vec<u8>`, `Bytes`) travel as postcard bytes: the same wire form as a
        // sequence of u8, but one copy instead of a serde call per byte. The last argument, if
        // it is one, is not copied at all: it goes out as the frame's tail.
        let tail_arg = args.last().filter(|(_, t)| is_byte_string(t));
        let head_args = &args[..args.len() - usize::from(tail_arg.is_some())];
        let refs = head_args.iter().map(|(n, t)| {
            if is_byte_string(t) {
                quote!(#rt::AsBytes(<#t as #rt::ByteString>::as_byte_slice(&#n)))
            } else {
                quote!(&#n)
            }
        });
        let tail = match tail_arg {
            Some((n, t)) => quote! {
                ::core::option::Option::Some(<#t as #rt::ByteString>::into_bytes(#n))
            },
            None => quote!(::core::option::Option::None),
        };
        let docs = attrs.iter().filter(|a| a.path().is_ident("doc"));
        let docs = quote!(#(#docs)* #cfg);
        let args_tuple = quote!((#(#refs,)*));
        if let Some((input, item)) = &m.input {
            let encode = if is_byte_string(item) {
                quote!(#rt::encode_bytes_item::<#item>)
            } else {
                quote!(#rt::encode_item::<#item>)
            };
            let feed = quote!((#input, #encode as fn(#item) -> ::core::result::Result<#rt::Body, #rt::Error>));
            return self.client_input_method(
                m,
                &docs,
                &index,
                &params.collect::<Vec<_>>(),
                &args_tuple,
                &tail,
                &feed,
            );
        }
        match &m.output {
            Output::Plain(t) if is_byte_string(t) => quote! {
                #docs
                #vis async fn #ident(&self, #(#params),*) -> ::core::result::Result<#t, #rt::Error> {
                    #rt::call_unary_bytes::<Self, _, #t>(&self.channel, #index, &#args_tuple, #tail, &self.options).await
                }
            },
            Output::Plain(t) => quote! {
                #docs
                #vis async fn #ident(&self, #(#params),*) -> ::core::result::Result<#t, #rt::Error> {
                    #rt::call_unary::<Self, _, #t>(&self.channel, #index, &#args_tuple, #tail, &self.options).await
                }
            },
            Output::Result { ok, err, full } => quote! {
                #docs
                #vis async fn #ident(&self, #(#params),*) -> ::core::result::Result<#ok, #rt::Error<#err>> {
                    match #rt::call_unary::<Self, _, #full>(&self.channel, #index, &#args_tuple, #tail, &self.options).await {
                        ::core::result::Result::Ok(::core::result::Result::Ok(v)) => ::core::result::Result::Ok(v),
                        ::core::result::Result::Ok(::core::result::Result::Err(e)) => {
                            ::core::result::Result::Err(#rt::Error::Application(e))
                        }
                        ::core::result::Result::Err(e) => ::core::result::Result::Err(e.with_application()),
                    }
                }
            },
            Output::AliasedResult(full) => quote! {
                #docs
                #vis async fn #ident(&self, #(#params),*) -> ::core::result::Result<
                    <#full as #rt::ResultParts>::Ok,
                    #rt::Error<<#full as #rt::ResultParts>::Err>,
                > {
                    match #rt::call_unary::<Self, _, #full>(&self.channel, #index, &#args_tuple, #tail, &self.options).await {
                        ::core::result::Result::Ok(r) => {
                            #rt::ResultParts::into_result(r).map_err(#rt::Error::Application)
                        }
                        ::core::result::Result::Err(e) => ::core::result::Result::Err(e.with_application()),
                    }
                }
            },
            Output::Streaming(t) if let Some((ok, err)) = stream_result(t) => quote! {
                #docs
                #vis async fn #ident(&self, #(#params),*)
                    -> ::core::result::Result<#rt::TypedStreaming<#ok, #err>, #rt::Error<#err>>
                {
                    #rt::call_streaming::<Self, _, #t>(&self.channel, #index, &#args_tuple, #tail, &self.options)
                        .await
                        .map(#rt::TypedStreaming::new)
                        .map_err(#rt::Error::with_application)
                }
            },
            Output::Streaming(t) => quote! {
                #docs
                #vis async fn #ident(&self, #(#params),*)
                    -> ::core::result::Result<#rt::Streaming<#t>, #rt::Error>
                {
                    #rt::call_streaming::<Self, _, #t>(&self.channel, #index, &#args_tuple, #tail, &self.options).await
                }
            },
        }
    }

    /// A client method of a method taking an input stream: `feed` is the stream and its
    /// item encoder.
    #[allow(clippy::too_many_arguments)]
    fn client_input_method(
        &self,
        m: &Method,
        docs: &TokenStream,
        index: &TokenStream,
        params: &[TokenStream],
        args_tuple: &TokenStream,
        tail: &TokenStream,
        feed: &TokenStream,
    ) -> TokenStream {
        let rt = &self.rt;
        let vis = &self.def.vis;
        let ident = &m.ident;
        let call = |r: &TokenStream| quote!(#rt::call_client_stream::<Self, _, _, #r>(&self.channel, #index, &#args_tuple, #tail, #feed, &self.options).await);
        match &m.output {
            Output::Plain(t) => {
                let c = call(&quote!(#t));
                quote! {
                    #docs
                    #vis async fn #ident(&self, #(#params),*) -> ::core::result::Result<#t, #rt::Error> {
                        #c
                    }
                }
            }
            Output::Result { ok, err, full } => {
                let c = call(&quote!(#full));
                quote! {
                    #docs
                    #vis async fn #ident(&self, #(#params),*) -> ::core::result::Result<#ok, #rt::Error<#err>> {
                        match #c {
                            ::core::result::Result::Ok(::core::result::Result::Ok(v)) => ::core::result::Result::Ok(v),
                            ::core::result::Result::Ok(::core::result::Result::Err(e)) => {
                                ::core::result::Result::Err(#rt::Error::Application(e))
                            }
                            ::core::result::Result::Err(e) => ::core::result::Result::Err(e.with_application()),
                        }
                    }
                }
            }
            Output::AliasedResult(full) => {
                let c = call(&quote!(#full));
                quote! {
                    #docs
                    #vis async fn #ident(&self, #(#params),*) -> ::core::result::Result<
                        <#full as #rt::ResultParts>::Ok,
                        #rt::Error<<#full as #rt::ResultParts>::Err>,
                    > {
                        match #c {
                            ::core::result::Result::Ok(r) => {
                                #rt::ResultParts::into_result(r).map_err(#rt::Error::Application)
                            }
                            ::core::result::Result::Err(e) => ::core::result::Result::Err(e.with_application()),
                        }
                    }
                }
            }
            Output::Streaming(t) => {
                let c = quote!(#rt::call_bidi::<Self, _, _, #t>(&self.channel, #index, &#args_tuple, #tail, #feed, &self.options).await);
                match stream_result(t) {
                    Some((ok, err)) => quote! {
                        #docs
                        #vis async fn #ident(&self, #(#params),*)
                            -> ::core::result::Result<#rt::TypedStreaming<#ok, #err>, #rt::Error<#err>>
                        {
                            #c.map(#rt::TypedStreaming::new).map_err(#rt::Error::with_application)
                        }
                    },
                    None => quote! {
                        #docs
                        #vis async fn #ident(&self, #(#params),*)
                            -> ::core::result::Result<#rt::Streaming<#t>, #rt::Error>
                        {
                            #c
                        }
                    },
                }
            }
        }
    }

    fn server(&self) -> TokenStream {
        let rt = &self.rt;
        let vis = &self.def.vis;
        let server = &self.server;
        let client = &self.client;
        let trait_name = &self.def.ident;
        let consts = self.consts();
        let doc = format!(
            "Serves an implementation of [`{trait_name}`]: add it to an `hvrpc::Server` (or serve \
             it back over a client connection with `hvrpc::Connector::serve`).\n\n{}",
            self.identity_doc()
        );
        // The methods' numbers in this build, as constants to match on.
        let index_consts: Vec<TokenStream> = (0..self.def.methods.len())
            .map(|k| {
                let c = format_ident!("__M{}", k);
                let e = self.index_expr(k);
                let cfg = Self::cfg_attrs(&self.def.methods[k]);
                quote!(#cfg #[allow(non_upper_case_globals)] const #c: u32 = #e;)
            })
            .collect();
        let names = self.def.methods.iter().enumerate().map(|(k, m)| {
            let i = format_ident!("__M{}", k);
            let cfg = Self::cfg_attrs(m);
            let name = LitStr::new(&m.ident.to_string(), m.ident.span());
            quote!(#cfg #i => ::core::option::Option::Some(#name),)
        });
        let translations = self.def.methods.iter().enumerate().map(|(k, m)| {
            let i = format_ident!("__M{}", k);
            let cfg = Self::cfg_attrs(m);
            let args = Self::wire_args(m);
            quote!(#cfg #i => #rt::retranslate::<#args>(args, reading),)
        });
        let arms = self.def.methods.iter().enumerate().map(|(k, m)| {
            let i = format_ident!("__M{}", k);
            let cfg = Self::cfg_attrs(m);
            let ident = &m.ident;
            let name = LitStr::new(&ident.to_string(), ident.span());
            let vars: Vec<Ident> = (0..m.args.len())
                .map(|n| format_ident!("__a{}", n))
                .collect();
            // Byte strings are decoded as slices of the received frame, then turned into
            // their type (`Bytes`: a view of the frame; `Vec<u8>`: one copy).
            let tys = m.args.iter().map(|(_, t)| {
                if is_byte_string(t) {
                    quote!(#rt::ByteSlice<'_>)
                } else {
                    quote!(#t)
                }
            });
            let owned = m.args.iter().zip(&vars).filter(|((_, t), _)| is_byte_string(t)).map(
                |((_, t), v)| quote!(let #v = <#t as #rt::ByteString>::from_frame(&args, #v.0);),
            );
            let handler = match &m.output {
                Output::Streaming(_) => quote!(#rt::Handler::streaming),
                Output::Plain(t) if is_byte_string(t) && m.blocking => {
                    quote!(#rt::Handler::blocking_bytes)
                }
                Output::Plain(t) if is_byte_string(t) => quote!(#rt::Handler::unary_bytes),
                _ if m.blocking => quote!(#rt::Handler::blocking),
                _ => quote!(#rt::Handler::unary),
            };
            let input = m.input.as_ref().map(|(_, item)| {
                quote!(let __input = #rt::input_stream::<#item>(&ctx);)
            });
            let input_var = m.input.as_ref().map(|_| quote!(__input));
            let call = quote!(#trait_name::#ident(&*service, ctx, #(#vars,)* #input_var).await);
            let body = match &m.output {
                Output::Plain(t) if is_byte_string(t) => {
                    quote!(<#t as #rt::ByteString>::into_bytes(#call))
                }
                Output::Streaming(t) if stream_result(t).is_some() => {
                    quote!(#rt::end_at_error(#call))
                }
                _ => call,
            };
            quote! {
                #cfg
                #i => {
                    let (#(#vars,)*): (#(#tys,)*) = #rt::decode_args(
                        <Self as #rt::ServiceDef>::NAME, #name, &args,
                    )?;
                    #(#owned)*
                    #input
                    let service = <::std::sync::Arc<HvrpcImpl> as ::core::clone::Clone>::clone(&self.inner);
                    ::core::result::Result::Ok(#handler(async move { #body }))
                }
            }
        });
        quote! {
            #[doc = #doc]
            #vis struct #server<HvrpcImpl> {
                inner: ::std::sync::Arc<HvrpcImpl>,
            }

            impl<HvrpcImpl: #trait_name> #server<HvrpcImpl> {
                /// Wraps an implementation.
                #vis fn new(service: HvrpcImpl) -> Self {
                    Self { inner: ::std::sync::Arc::new(service) }
                }

                /// Wraps an implementation that is shared with other code.
                #vis fn from_arc(service: ::std::sync::Arc<HvrpcImpl>) -> Self {
                    Self { inner: service }
                }
            }

            impl<HvrpcImpl> ::core::clone::Clone for #server<HvrpcImpl> {
                fn clone(&self) -> Self {
                    Self { inner: <::std::sync::Arc<HvrpcImpl> as ::core::clone::Clone>::clone(&self.inner) }
                }
            }

            impl<HvrpcImpl> ::core::fmt::Debug for #server<HvrpcImpl> {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    f.write_str(::core::stringify!(#server))
                }
            }

            impl<HvrpcImpl> #rt::ServiceDef for #server<HvrpcImpl> {
                #consts

                fn spec() -> ::core::result::Result<
                    ::std::sync::Arc<#rt::ServiceSpec>,
                    ::std::sync::Arc<str>,
                > {
                    <#client as #rt::ServiceDef>::spec()
                }
            }

            impl<HvrpcImpl: #trait_name> #rt::Service for #server<HvrpcImpl> {
                fn name(&self) -> &'static str {
                    <#client as #rt::ServiceDef>::NAME
                }

                fn spec(&self) -> ::core::result::Result<
                    ::std::sync::Arc<#rt::ServiceSpec>,
                    ::std::sync::Arc<str>,
                > {
                    <#client as #rt::ServiceDef>::spec()
                }

                fn method_name(&self, method: u32) -> ::core::option::Option<&'static str> {
                    #(#index_consts)*
                    match method {
                        #(#names)*
                        _ => ::core::option::Option::None,
                    }
                }

                fn translate_args(
                    &self,
                    method: u32,
                    args: &[u8],
                    reading: &#rt::Reading,
                ) -> ::core::result::Result<#rt::Bytes, #rt::String> {
                    #(#index_consts)*
                    match method {
                        #(#translations)*
                        _ => ::core::result::Result::Err(<#rt::String as ::core::convert::From<&str>>::from("no such method")),
                    }
                }

                fn call(
                    &self,
                    method: u32,
                    ctx: #rt::Context,
                    args: #rt::Bytes,
                ) -> ::core::result::Result<#rt::Handler, (#rt::ErrorCode, #rt::String)> {
                    #(#index_consts)*
                    match method {
                        #(#arms)*
                        _ => ::core::result::Result::Err(#rt::unknown_method(
                            <Self as #rt::ServiceDef>::NAME, method,
                        )),
                    }
                }
            }
        }
    }
}

/// `(T, E)` of a stream item `Result<T, E>`: the method's own error travels typed and ends
/// the stream.
fn stream_result(item: &syn::Type) -> Option<(&syn::Type, &syn::Type)> {
    match crate::parse::last_segment_args(item, "Result")?.as_slice() {
        [ok, err] => Some((ok, err)),
        _ => None,
    }
}

/// Whether `ty` is a byte string the runtime encodes in one piece: `Vec<u8>` or `Bytes`
/// (however the path is spelled: `std::vec::Vec<u8>`, `hvrpc::Bytes`, `bytes::Bytes`).
fn is_byte_string(ty: &syn::Type) -> bool {
    let syn::Type::Path(p) = ty else { return false };
    if p.qself.is_some() {
        return false;
    }
    let Some(last) = p.path.segments.last() else {
        return false;
    };
    match &last.arguments {
        syn::PathArguments::None => last.ident == "Bytes",
        syn::PathArguments::AngleBracketed(args) if last.ident == "Vec" => matches!(
            args.args.first(),
            Some(syn::GenericArgument::Type(syn::Type::Path(t)))
                if args.args.len() == 1 && t.qself.is_none() && t.path.is_ident("u8")
        ),
        _ => false,
    }
}

fn format_guid(g: u128) -> String {
    let h = format!("{g:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        h.get(0..8).unwrap_or_default(),
        h.get(8..12).unwrap_or_default(),
        h.get(12..16).unwrap_or_default(),
        h.get(16..20).unwrap_or_default(),
        h.get(20..32).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::is_byte_string;

    #[test]
    fn recognises_byte_strings_however_spelled() {
        for yes in [
            "Vec<u8>",
            "std::vec::Vec<u8>",
            "::std::vec::Vec<u8>",
            "alloc::vec::Vec<u8>",
        ] {
            assert!(is_byte_string(&syn::parse_str(yes).unwrap()), "{yes}");
        }
        for no in [
            "Vec<u16>",
            "Vec<u8, A>",
            "Vec<std::primitive::u8>",
            "u8",
            "[u8; 4]",
            "Vec",
        ] {
            assert!(!is_byte_string(&syn::parse_str(no).unwrap()), "{no}");
        }
    }
}
