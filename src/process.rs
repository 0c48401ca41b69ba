//! What the process does to keep the API key to itself, first thing in `main`: it takes the
//! key out of its own environment, bytes and all, so that `/proc/<pid>/environ`, a child
//! process or a crash report cannot show it; and on Linux it marks itself non-dumpable, so
//! that no core dump is written and other processes of the same user cannot read its memory
//! through `/proc` or attach a debugger to it.

use crate::config::API_KEY_VAR;

/// The API key from the environment, removed from it. Called before any thread starts:
/// changing the environment while another thread may read it is undefined behaviour.
pub fn take_api_key() -> Option<String> {
    let key = std::env::var(API_KEY_VAR).ok();
    if key.is_some() {
        wipe_value(API_KEY_VAR);
    }
    // SAFETY: the process has one thread (see above), so nothing reads the environment
    // while it changes.
    unsafe { std::env::remove_var(API_KEY_VAR) };
    key
}

/// Overwrites the variable's value where the environment keeps it. Removing the variable
/// only takes its pointer out of `environ`: the bytes stay in the block the kernel set up at
/// exec, which is what `/proc/<pid>/environ` shows.
#[cfg(unix)]
fn wipe_value(name: &str) {
    let Ok(name) = std::ffi::CString::new(name) else {
        return;
    };
    // SAFETY: one thread (see `take_api_key`). getenv returns null or a pointer to the
    // value's NUL-terminated bytes in writable memory (the exec block on the stack, or the
    // heap for a variable set since); overwriting them within their length, terminator
    // kept, leaves every other variable as it was.
    unsafe {
        let value = libc::getenv(name.as_ptr());
        if !value.is_null() {
            std::ptr::write_bytes(value, 0, libc::strlen(value));
        }
    }
}

#[cfg(not(unix))]
fn wipe_value(_name: &str) {}

/// No core dump, and no reading of this process's memory by others of the same user.
#[cfg(target_os = "linux")]
pub fn forbid_core_dumps() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_DUMPABLE takes plain integers and touches no memory of ours.
    let result = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub fn forbid_core_dumps() -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_process_becomes_non_dumpable() {
        forbid_core_dumps().unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }, 0);
    }
}
