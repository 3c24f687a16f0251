//! An example legacy launcher in Rust: each job is a local process group started with
//! `std::process::Command`. It implements the C functions of `flowrun_legacy.h`, whose types
//! it mirrors below (ABI version 1). `cargo build` produces `liblauncher_rs.so`.
#![allow(clippy::missing_safety_doc)] // the header states the contract of every function

use std::{
    ffi::{c_char, CStr, CString},
    fs::OpenOptions,
    os::unix::process::{CommandExt, ExitStatusExt},
    process::{Child, Command, Stdio},
    ptr::null_mut,
};

const OK: i32 = 0;
const ERROR: i32 = -1;
const EXITED: i32 = 1;
const SIGNALED: i32 = 2;

/// `flowrun_legacy_job_spec` up to `log_path`, and `flowrun_legacy_status` up to `message`: the
/// fields after them are not used here, and a prefix of a struct is enough to use it through
/// flowrun's pointer.
#[repr(C)]
pub struct JobSpec {
    name: *const c_char,
    shell: i32,
    argv: *const *const c_char,
    env: *const *const c_char,
    cwd: *const c_char,
    job_dir: *const c_char,
    log_path: *const c_char,
}

#[repr(C)]
pub struct Status {
    state: i32,
    code: i32,
    message: *mut c_char,
}

pub struct Launcher; // no state: every job stands alone
pub struct Job(Child);

extern "C" { fn kill(pid: i32, sig: i32) -> i32; } // libc's: a negative pid signals a group

/// Copies `s`, a NUL-terminated string valid for the call (the header's rule for flowrun's).
unsafe fn text(s: *const c_char) -> String {
    // SAFETY: `s` is such a string, by this function's contract.
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}

/// Copies `p`, a NULL-terminated array of strings valid for the call.
unsafe fn list(p: *const *const c_char) -> Vec<String> {
    // SAFETY: reading stops at the NULL entry, within the array; the entries before are strings.
    (0..).map(|i| unsafe { *p.add(i) }).take_while(|s| !s.is_null()).map(|s| unsafe { text(s) }).collect()
}

/// A string handed to flowrun, which gives it back to flowrun_legacy_free_string.
fn give(s: String) -> *mut c_char {
    CString::new(s).map_or(null_mut(), CString::into_raw)
}

#[no_mangle]
pub extern "C" fn flowrun_legacy_abi_version() -> u32 {
    1
}

#[no_mangle]
pub unsafe extern "C" fn flowrun_legacy_open(_: *const c_char, l: *mut *mut Launcher, _: *mut *mut c_char) -> i32 {
    // SAFETY: `l` is flowrun's out-parameter, valid for writing during the call.
    unsafe { *l = Box::into_raw(Box::new(Launcher)) };
    OK
}

/// Starts the job; every pointer of `spec` is as the header describes it, valid for the call.
unsafe fn start(spec: &JobSpec) -> std::io::Result<Child> {
    // SAFETY: the pointers are as the header says (this function's contract), and copied here.
    let (args, env, log_path, cwd) = unsafe { (list(spec.argv), list(spec.env), text(spec.log_path), text(spec.cwd)) };
    let mut cmd = Command::new(if spec.shell == 0 { args[0].as_str() } else { "/bin/sh" });
    cmd.args(if spec.shell == 0 { args[1..].to_vec() } else { vec!["-c".into(), args[0].clone()] });
    cmd.envs(env.iter().filter_map(|entry| entry.split_once('=')));
    let log = OpenOptions::new().append(true).open(log_path)?; // flowrun created it
    cmd.current_dir(cwd).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    cmd.process_group(0).spawn() // a group of its own, so that kill reaches all of it
}

#[no_mangle]
pub unsafe extern "C" fn flowrun_legacy_launch(_: *mut Launcher, spec: *const JobSpec, job: *mut *mut Job,
    native_id: *mut *mut c_char, error: *mut *mut c_char) -> i32 {
    // SAFETY: `spec` points to flowrun's job spec, whose pointers are valid during the call.
    match unsafe { start(&*spec) } {
        Ok(child) => {
            // SAFETY: `native_id` and `job` are flowrun's out-parameters, valid for writing.
            unsafe { (*native_id, *job) = (give(format!("pid {}", child.id())), Box::into_raw(Box::new(Job(child)))) };
            OK
        }
        // SAFETY: `error` is flowrun's out-parameter, valid for writing.
        Err(e) => unsafe { *error = give(e.to_string()); ERROR },
    }
}

#[no_mangle]
pub unsafe extern "C" fn flowrun_legacy_poll(_: *mut Launcher, job: *mut Job, st: *mut Status) -> i32 {
    // SAFETY: `st` is flowrun's to write; `job` ours, not freed; one thread, so neither aliased.
    let (st, job) = unsafe { (&mut *st, &mut *job) };
    match job.0.try_wait() {
        Ok(None) => OK, // still running: the state stays RUNNING
        Ok(Some(end)) => {
            (st.state, st.code) =
                end.signal().map_or((EXITED, end.code().unwrap_or(-1)), |sig| (SIGNALED, sig));
            OK
        }
        Err(e) => {
            st.message = give(format!("waitpid: {e}"));
            ERROR
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn flowrun_legacy_kill(_: *mut Launcher, job: *mut Job, _: *mut *mut c_char) -> i32 {
    // SAFETY: a handle this launcher made and flowrun has not freed yet, used from one thread.
    let child = unsafe { &mut (*job).0 };
    if child.try_wait().ok().flatten().is_none() {
        // SAFETY: kill(2) touches no memory; the unreaped child's pid is still its group's id.
        unsafe { kill(-(child.id() as i32), 9) }; // SIGKILL, the whole group
        let _ = child.wait();
    }
    OK
}

#[no_mangle]
pub unsafe extern "C" fn flowrun_legacy_free_job(_: *mut Launcher, job: *mut Job) {
    // SAFETY: from `Box::into_raw` in `flowrun_legacy_launch`; flowrun frees each job once.
    drop(unsafe { Box::from_raw(job) });
}

#[no_mangle]
pub unsafe extern "C" fn flowrun_legacy_free_string(s: *mut c_char) {
    // SAFETY: every string handed out is from `CString::into_raw` (`give`), freed once.
    drop(unsafe { CString::from_raw(s) });
}

#[no_mangle]
pub unsafe extern "C" fn flowrun_legacy_close(launcher: *mut Launcher) {
    // SAFETY: from `Box::into_raw` in `flowrun_legacy_open`; flowrun closes it once.
    drop(unsafe { Box::from_raw(launcher) });
}
