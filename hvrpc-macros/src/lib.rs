//! The `#[hvrpc::service]` attribute. Use it through the `hvrpc` crate, which documents it.

use proc_macro::TokenStream;

mod expand;
mod parse;

/// Turns a service trait into a typed client, a server trait and a server adapter. See
/// `hvrpc::service` for the documentation.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item2 = proc_macro2::TokenStream::from(item.clone());
    match parse::parse(attr.into(), item2.clone()) {
        Ok(service) => expand::expand(&service).into(),
        Err(err) => {
            // Keep the user's item so that IDEs and later errors still see it.
            let mut out = parse::without_options(item2);
            out.extend(err.into_compile_error());
            out.into()
        }
    }
}
