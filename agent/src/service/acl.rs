//! Directory access on Windows: the data directory holds the device's private key, and the
//! configuration directory says where the agent reports, so both get a protected DACL (no
//! inheritance from `%ProgramData%`, whose default lets every user create files) granting
//! full control to SYSTEM and Administrators and nothing to anyone else: the SDDL
//! [`PROTECTED_SDDL`], what `icacls DIR /inheritance:r /grant:r SYSTEM:(OI)(CI)F
//! Administrators:(OI)(CI)F` sets.
//!
//! The only `unsafe` of the agent besides the service entry point: three advapi32 calls, each
//! commented, each result checked, every buffer the OS allocates freed with `LocalFree`.

#![allow(unsafe_code)]

use std::os::windows::ffi::OsStrExt;
use std::path::Path;
use windows_sys::Win32::Foundation::{ERROR_SUCCESS, LocalFree};
use windows_sys::Win32::Security::Authorization::{
    ConvertSecurityDescriptorToStringSecurityDescriptorW,
    ConvertStringSecurityDescriptorToSecurityDescriptorW, GetNamedSecurityInfoW, SDDL_REVISION_1,
    SE_FILE_OBJECT, SetNamedSecurityInfoW,
};
use windows_sys::Win32::Security::{
    ACL, DACL_SECURITY_INFORMATION, GetSecurityDescriptorDacl, PROTECTED_DACL_SECURITY_INFORMATION,
    PSECURITY_DESCRIPTOR,
};

/// SYSTEM (`SY`) and Administrators (`BA`): full access (`FA`), inherited by files and
/// subdirectories (`OICI`); `P`: the DACL is protected from inheritance.
pub const PROTECTED_SDDL: &str = "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)";

fn wide(s: &std::ffi::OsStr) -> Vec<u16> {
    s.encode_wide().chain(std::iter::once(0)).collect()
}

/// Frees a buffer the OS allocated with `LocalAlloc`, on drop.
struct Local(*mut core::ffi::c_void);

impl Drop for Local {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from an advapi32 call documented to allocate it with
            // LocalAlloc, and is freed once.
            unsafe { LocalFree(self.0) };
        }
    }
}

/// Replaces `dir`'s DACL with [`PROTECTED_SDDL`].
pub fn restrict(dir: &Path) -> std::io::Result<()> {
    let sddl = wide(PROTECTED_SDDL.as_ref());
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: `sddl` is NUL-terminated UTF-16; `sd` receives a LocalAlloc'd descriptor.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl.as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(std::io::Error::last_os_error());
    }
    let sd = Local(sd);
    let (mut present, mut defaulted) = (0, 0);
    let mut dacl: *mut ACL = std::ptr::null_mut();
    // SAFETY: `sd.0` is the valid descriptor from above; `dacl` points into it and is used
    // while `sd` lives.
    let ok = unsafe { GetSecurityDescriptorDacl(sd.0, &mut present, &mut dacl, &mut defaulted) };
    if ok == 0 || present == 0 {
        return Err(std::io::Error::last_os_error());
    }
    let name = wide(dir.as_os_str());
    // SAFETY: `name` is NUL-terminated UTF-16; owner, group and SACL are not changed (null).
    let rc = unsafe {
        SetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            dacl,
            std::ptr::null(),
        )
    };
    if rc != ERROR_SUCCESS {
        return Err(std::io::Error::from_raw_os_error(rc as i32));
    }
    Ok(())
}

/// `dir`'s DACL as SDDL, read back from the system (what `service install` prints).
pub fn describe(dir: &Path) -> std::io::Result<String> {
    let name = wide(dir.as_os_str());
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: `name` is NUL-terminated UTF-16; only the descriptor is requested, and it is
    // LocalAlloc'd by the call.
    let rc = unsafe {
        GetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    if rc != ERROR_SUCCESS {
        return Err(std::io::Error::from_raw_os_error(rc as i32));
    }
    let sd = Local(sd);
    let mut text: *mut u16 = std::ptr::null_mut();
    let mut len = 0u32;
    // SAFETY: `sd.0` is valid; `text` receives a LocalAlloc'd NUL-terminated string of `len`
    // characters.
    let ok = unsafe {
        ConvertSecurityDescriptorToStringSecurityDescriptorW(
            sd.0,
            SDDL_REVISION_1,
            DACL_SECURITY_INFORMATION,
            &mut text,
            &mut len,
        )
    };
    if ok == 0 {
        return Err(std::io::Error::last_os_error());
    }
    let text = Local(text.cast());
    // SAFETY: the call wrote `len` UTF-16 units (the length may count the terminating NUL).
    let units = unsafe { std::slice::from_raw_parts(text.0.cast::<u16>(), len as usize) };
    Ok(String::from_utf16_lossy(units)
        .trim_end_matches('\0')
        .to_owned())
}
