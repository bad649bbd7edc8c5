//! Systems without collectors: every query is unsupported.

use crate::{
    Filesystem, InfoError, LoadInfo, MemoryInfo, NetInterface, OsInfo, Sample, TimeInfo,
    UserSession,
};

/// The methods this build answers.
pub const SUPPORTED: &[&str] = &["agent_info"];

fn unsupported<T>() -> Result<T, InfoError> {
    Err(InfoError::Unsupported(std::env::consts::OS.to_owned()))
}

/// See [`crate::GuestInfo::os_info`].
pub fn os_info() -> Result<OsInfo, InfoError> {
    unsupported()
}
/// See [`crate::GuestInfo::hostname`].
pub fn hostname() -> Result<String, InfoError> {
    unsupported()
}
/// See [`crate::GuestInfo::time`].
pub fn time() -> Result<TimeInfo, InfoError> {
    unsupported()
}
/// See [`crate::GuestInfo::load`].
pub fn load() -> Result<LoadInfo, InfoError> {
    unsupported()
}
/// See [`crate::GuestInfo::memory`].
pub fn memory() -> Result<MemoryInfo, InfoError> {
    unsupported()
}
/// See [`crate::GuestInfo::users`].
pub fn users() -> Result<Vec<UserSession>, InfoError> {
    unsupported()
}
/// See [`crate::GuestInfo::network_interfaces`].
pub fn network_interfaces() -> Result<Vec<NetInterface>, InfoError> {
    unsupported()
}
/// See [`crate::GuestInfo::filesystems`].
pub fn filesystems() -> Result<Vec<Filesystem>, InfoError> {
    unsupported()
}
/// See [`crate::GuestInfo::watch`].
pub fn sample() -> Result<Sample, InfoError> {
    unsupported()
}
