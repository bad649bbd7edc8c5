//! Code generation: one method per generated item. Generated code names the runtime only
//! through `<crate>::__private`, with fully qualified paths, so it works under
//! `#![no_implicit_prelude]`, with a renamed dependency, and through re-exports.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{Ident, LitStr};

use crate::parse::{Identity, Method, Output, ServiceDef};

pub(crate) fn expand(def: &ServiceDef) -> TokenStream {
    let g = Generator::new(def);
    let server_trait = g.server_trait();
    let client = g.client();
    let server = g.server();
    quote! {
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
    fingerprint: u64,
}

/// FNV-1a, 64 bit.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl<'a> Generator<'a> {
    fn new(def: &'a ServiceDef) -> Self {
        let krate = &def.krate;
        // The fingerprint covers the name, and each method's name, argument types and return
        // type in order: what decides the bytes on the wire. Argument names do not count.
        let mut canon = format!("hvrpc-service-v1 {};", def.name);
        for m in &def.methods {
            let args: Vec<String> = m
                .args
                .iter()
                .map(|(_, ty)| quote!(#ty).to_string())
                .collect();
            canon.push_str(&format!(
                "{}({})->{};",
                m.ident,
                args.join(","),
                m.ret_tokens
            ));
        }
        Self {
            def,
            rt: quote!(#krate::__private),
            client: format_ident!("{}Client", def.ident),
            server: format_ident!("{}Server", def.ident),
            fingerprint: fnv1a(canon.as_bytes()),
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
            let args = args.iter().map(|(n, t)| quote!(#n: #t));
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
            Output::Streaming(t) => quote!(#rt::Streaming<#t>),
        }
    }

    fn consts(&self) -> TokenStream {
        let rt = &self.rt;
        let name = LitStr::new(&self.def.name, proc_macro2::Span::call_site());
        let id = self.id_expr();
        let fp = self.fingerprint;
        let methods = self
            .def
            .methods
            .iter()
            .map(|m| LitStr::new(&m.ident.to_string(), m.ident.span()));
        quote! {
            const NAME: &'static str = #name;
            const ID: #rt::ServiceId = #id;
            const FINGERPRINT: u64 = #fp;
            const METHODS: &'static [&'static str] = &[#(#methods),*];
        }
    }

    fn client(&self) -> TokenStream {
        let rt = &self.rt;
        let vis = &self.def.vis;
        let client = &self.client;
        let trait_name = &self.def.ident;
        let consts = self.consts();
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
        let index = index as u32;
        let params = args.iter().map(|(n, t)| quote!(#n: #t));
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
        let args_tuple = quote!((#(#refs,)*));
        match &m.output {
            Output::Plain(t) if is_byte_string(t) => quote! {
                #(#docs)*
                #vis async fn #ident(&self, #(#params),*) -> ::core::result::Result<#t, #rt::Error> {
                    #rt::call_unary_bytes::<Self, _, #t>(&self.channel, #index, &#args_tuple, #tail, &self.options).await
                }
            },
            Output::Plain(t) => quote! {
                #(#docs)*
                #vis async fn #ident(&self, #(#params),*) -> ::core::result::Result<#t, #rt::Error> {
                    #rt::call_unary::<Self, _, #t>(&self.channel, #index, &#args_tuple, #tail, &self.options).await
                }
            },
            Output::Result { ok, err, full } => quote! {
                #(#docs)*
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
            Output::Streaming(t) => quote! {
                #(#docs)*
                #vis async fn #ident(&self, #(#params),*)
                    -> ::core::result::Result<#rt::Streaming<#t>, #rt::Error>
                {
                    #rt::call_streaming::<Self, _, #t>(&self.channel, #index, &#args_tuple, #tail, &self.options).await
                }
            },
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
        let names = self.def.methods.iter().enumerate().map(|(i, m)| {
            let i = i as u32;
            let name = LitStr::new(&m.ident.to_string(), m.ident.span());
            quote!(#i => ::core::option::Option::Some(#name),)
        });
        let arms = self.def.methods.iter().enumerate().map(|(i, m)| {
            let i = i as u32;
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
            let call = quote!(#trait_name::#ident(&*service, ctx, #(#vars),*).await);
            let body = match &m.output {
                Output::Plain(t) if is_byte_string(t) => {
                    quote!(<#t as #rt::ByteString>::into_bytes(#call))
                }
                _ => call,
            };
            quote! {
                #i => {
                    let (#(#vars,)*): (#(#tys,)*) = #rt::decode_args(
                        <Self as #rt::ServiceDef>::NAME, #name, &args,
                    )?;
                    #(#owned)*
                    let service = <::std::sync::Arc<S> as ::core::clone::Clone>::clone(&self.inner);
                    ::core::result::Result::Ok(#handler(async move { #body }))
                }
            }
        });
        quote! {
            #[doc = #doc]
            #vis struct #server<S> {
                inner: ::std::sync::Arc<S>,
            }

            impl<S: #trait_name> #server<S> {
                /// Wraps an implementation.
                #vis fn new(service: S) -> Self {
                    Self { inner: ::std::sync::Arc::new(service) }
                }

                /// Wraps an implementation that is shared with other code.
                #vis fn from_arc(service: ::std::sync::Arc<S>) -> Self {
                    Self { inner: service }
                }
            }

            impl<S> ::core::clone::Clone for #server<S> {
                fn clone(&self) -> Self {
                    Self { inner: <::std::sync::Arc<S> as ::core::clone::Clone>::clone(&self.inner) }
                }
            }

            impl<S> ::core::fmt::Debug for #server<S> {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    f.write_str(::core::stringify!(#server))
                }
            }

            impl<S> #rt::ServiceDef for #server<S> {
                #consts
            }

            impl<S: #trait_name> #rt::Service for #server<S> {
                fn name(&self) -> &'static str {
                    <#client as #rt::ServiceDef>::NAME
                }

                fn fingerprint(&self) -> u64 {
                    <#client as #rt::ServiceDef>::FINGERPRINT
                }

                fn method_name(&self, method: u32) -> ::core::option::Option<&'static str> {
                    match method {
                        #(#names)*
                        _ => ::core::option::Option::None,
                    }
                }

                fn call(
                    &self,
                    method: u32,
                    ctx: #rt::Context,
                    args: #rt::Bytes,
                ) -> ::core::result::Result<#rt::Handler, (#rt::ErrorCode, #rt::String)> {
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
