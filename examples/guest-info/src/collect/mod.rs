//! Reading the guest's state. One switch point: `linux` reads `/proc`, `/sys`, `/etc` and a
//! few libc calls; `windows` uses the Win32 API; anything else answers `Unsupported`.
//! The text and binary formats are parsed by pure functions in [`parse`], unit-tested against
//! sample content.

pub mod parse;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;

#[cfg(not(any(target_os = "linux", windows)))]
mod other;
#[cfg(not(any(target_os = "linux", windows)))]
pub use other::*;
