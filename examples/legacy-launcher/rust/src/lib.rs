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

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32; // libc's: a negative pid signals a process group
}

unsafe fn text(s: *const c_char) -> String {
    CStr::from_ptr(s).to_string_lossy().into_owned()
}

/// A NULL-terminated array of strings.
unsafe fn list(p: *const *const c_char) -> Vec<String> {
    (0..).map(|i| *p.add(i)).take_while(|s| !s.is_null()).map(|s| text(s)).collect()
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
pub unsafe extern "C" fn flowrun_legacy_open(
    _: *const c_char,
    l: *mut *mut Launcher,
    _: *mut *mut c_char,
) -> i32 {
    *l = Box::into_raw(Box::new(Launcher));
    OK
}

unsafe fn start(spec: &JobSpec) -> std::io::Result<Child> {
    let args = list(spec.argv);
    let mut cmd = Command::new(if spec.shell == 0 { args[0].as_str() } else { "/bin/sh" });
    cmd.args(if spec.shell == 0 { args[1..].to_vec() } else { vec!["-c".into(), args[0].clone()] });
    cmd.envs(list(spec.env).iter().filter_map(|entry| entry.split_once('=')));
    let log = OpenOptions::new().append(true).open(text(spec.log_path))?; // flowrun created it
    cmd.current_dir(text(spec.cwd)).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    cmd.process_group(0).spawn() // a group of its own, so that kill reaches all of it
}

#[no_mangle]
pub unsafe extern "C" fn flowrun_legacy_launch(
    _launcher: *mut Launcher,
    spec: *const JobSpec,
    job: *mut *mut Job,
    native_id: *mut *mut c_char,
    error: *mut *mut c_char,
) -> i32 {
    match start(&*spec) {
        Ok(child) => {
            *native_id = give(format!("pid {}", child.id()));
            *job = Box::into_raw(Box::new(Job(child)));
            OK
        }
        Err(e) => {
            *error = give(e.to_string());
            ERROR
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn flowrun_legacy_poll(_: *mut Launcher, job: *mut Job, st: *mut Status) -> i32 {
    let st = &mut *st;
    match (*job).0.try_wait() {
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
    let child = &mut (*job).0;
    if child.try_wait().ok().flatten().is_none() {
        kill(-(child.id() as i32), 9); // SIGKILL, the whole group
        let _ = child.wait();
    }
    OK
}

#[no_mangle]
pub unsafe extern "C" fn flowrun_legacy_free_job(_: *mut Launcher, job: *mut Job) {
    drop(Box::from_raw(job));
}

#[no_mangle]
pub unsafe extern "C" fn flowrun_legacy_free_string(s: *mut c_char) {
    drop(CString::from_raw(s));
}

#[no_mangle]
pub unsafe extern "C" fn flowrun_legacy_close(launcher: *mut Launcher) {
    drop(Box::from_raw(launcher));
}
