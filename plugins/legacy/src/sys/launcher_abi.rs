//! Calls into a launcher library through the C ABI of `include/flowrun_legacy.h`.
//!
//! Invariants:
//! - The `#[repr(C)]` types and function signatures below mirror the header, version
//!   [`ABI_VERSION`]; the library's version is checked before any other symbol is resolved.
//! - Every function pointer comes from the `Library` held in the same [`LauncherLibrary`], so
//!   it stays valid as long as the struct lives; the library is never unloaded before.
//! - Every pointer passed to the library points into memory owned by the caller and alive for
//!   the call ([`CJob`] owns the strings and arrays of a job spec).
//! - Every string the library hands out is copied, then given back to its
//!   `flowrun_legacy_free_string` exactly once ([`LauncherLibrary::take_string`]).
//! - Every job handle is given back to `flowrun_legacy_free_job` exactly once: [`JobHandle`]
//!   is neither `Clone` nor `Copy`, and [`LauncherLibrary::free_job`] consumes it.
//! - Calls never overlap: every method takes `&mut self`.

use std::{
    ffi::{c_char, c_void, CStr, CString},
    ptr::{self, NonNull},
};

use crate::protocol::LaunchRequest;

/// The interface version this adapter implements (`FLOWRUN_LEGACY_ABI_VERSION`).
pub const ABI_VERSION: u32 = 1;

/// `FLOWRUN_LEGACY_OK`.
pub const OK: i32 = 0;
/// `FLOWRUN_LEGACY_BUSY`.
pub const BUSY: i32 = 1;
/// `FLOWRUN_LEGACY_ERROR`.
pub const ERROR: i32 = -1;
/// `FLOWRUN_LEGACY_RUNNING`.
pub const RUNNING: i32 = 0;
/// `FLOWRUN_LEGACY_EXITED`.
pub const EXITED: i32 = 1;
/// `FLOWRUN_LEGACY_SIGNALED`.
pub const SIGNALED: i32 = 2;
/// `FLOWRUN_LEGACY_FAILED`.
pub const FAILED: i32 = 3;

const SYM_ABI_VERSION: &str = "flowrun_legacy_abi_version";

#[repr(C)]
struct JobSpecC {
    name: *const c_char,
    shell: i32,
    argv: *const *const c_char,
    env: *const *const c_char,
    cwd: *const c_char,
    job_dir: *const c_char,
    log_path: *const c_char,
    run_dir: *const c_char,
    run_tag: *const c_char,
    timeout_ms: i64,
    cpus: u32,
    memory_mb: i64,
    attempt: u32,
}

#[repr(C)]
struct StatusC {
    state: i32,
    code: i32,
    message: *mut c_char,
    cpu_s: f64,
    max_rss_mb: f64,
}

type AbiVersionFn = unsafe extern "C" fn() -> u32;
type OpenFn = unsafe extern "C" fn(*const c_char, *mut *mut c_void, *mut *mut c_char) -> i32;
type LaunchFn = unsafe extern "C" fn(
    *mut c_void,
    *const JobSpecC,
    *mut *mut c_void,
    *mut *mut c_char,
    *mut *mut c_char,
) -> i32;
type PollFn = unsafe extern "C" fn(*mut c_void, *mut c_void, *mut StatusC) -> i32;
type KillFn = unsafe extern "C" fn(*mut c_void, *mut c_void, *mut *mut c_char) -> i32;
type FreeJobFn = unsafe extern "C" fn(*mut c_void, *mut c_void);
type FreeStringFn = unsafe extern "C" fn(*mut c_char);
type CloseFn = unsafe extern "C" fn(*mut c_void);

/// A job's spec as C strings, alive while the launch call uses it.
pub struct CJob {
    strings: Vec<CString>,
    argv: Vec<*const c_char>,
    env: Vec<*const c_char>,
    shell: bool,
    timeout_ms: i64,
    cpus: u32,
    memory_mb: i64,
    attempt: u32,
}

impl CJob {
    /// Converts a request; fails if a string holds a NUL byte (C cannot see past it).
    pub fn new(job: &LaunchRequest) -> Result<CJob, String> {
        let c = |what: &str, s: &str| {
            CString::new(s).map_err(|_| format!("the job's {what} contains a NUL byte"))
        };
        // Order: name, cwd, job_dir, log_path, run_dir, run_tag, then argv, then env.
        let mut strings = vec![
            c("name", &job.name)?,
            c("cwd", &job.cwd)?,
            c("job directory", &job.job_dir)?,
            c("log path", &job.log_path)?,
            c("run directory", &job.run_dir)?,
            c("run tag", &job.run_tag)?,
        ];
        for a in &job.args {
            strings.push(c("command", a)?);
        }
        for e in &job.env {
            strings.push(c("environment", e)?);
        }
        // A CString's buffer is on the heap: moving the Vec does not move what these point at.
        let argv_end = 6 + job.args.len();
        let mut argv: Vec<*const c_char> =
            strings[6..argv_end].iter().map(|s| s.as_ptr()).collect();
        argv.push(ptr::null());
        let mut env: Vec<*const c_char> = strings[argv_end..].iter().map(|s| s.as_ptr()).collect();
        env.push(ptr::null());
        let opt = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
        Ok(CJob {
            strings,
            argv,
            env,
            shell: job.shell,
            timeout_ms: opt(job.timeout_ms),
            cpus: job.cpus.max(1),
            memory_mb: opt(job.memory_mb),
            attempt: job.attempt,
        })
    }

    fn spec(&self) -> JobSpecC {
        let s = |i: usize| self.strings[i].as_ptr();
        JobSpecC {
            name: s(0),
            shell: self.shell as i32,
            argv: self.argv.as_ptr(),
            env: self.env.as_ptr(),
            cwd: s(1),
            job_dir: s(2),
            log_path: s(3),
            run_dir: s(4),
            run_tag: s(5),
            timeout_ms: self.timeout_ms,
            cpus: self.cpus,
            memory_mb: self.memory_mb,
            attempt: self.attempt,
        }
    }
}

/// A launcher's handle of one job; given back to the launcher exactly once.
pub struct JobHandle(NonNull<c_void>);

// SAFETY: a handle is only ever used in calls on its launcher, which never overlap (see the
// `Send` of LauncherLibrary): it may move between threads with or without it.
unsafe impl Send for JobHandle {}

/// What `launch` returned.
pub struct LaunchResult {
    /// The return code.
    pub code: i32,
    /// The handle, when one was set and the code is OK.
    pub job: Option<JobHandle>,
    /// The launcher's id of the job.
    pub native_id: Option<String>,
    /// The error string.
    pub error: Option<String>,
}

/// What `poll` returned.
pub struct PollResult {
    /// The return code.
    pub code: i32,
    /// `status.state`.
    pub state: i32,
    /// `status.code`.
    pub value: i32,
    /// `status.message`.
    pub message: Option<String>,
    /// `status.cpu_s`, when not negative.
    pub cpu_s: Option<f64>,
    /// `status.max_rss_mb`, when not negative.
    pub max_rss_mb: Option<f64>,
}

/// A loaded and opened launcher.
pub struct LauncherLibrary {
    launch: LaunchFn,
    poll: PollFn,
    kill: KillFn,
    free_job: FreeJobFn,
    free_string: FreeStringFn,
    close: CloseFn,
    instance: *mut c_void,
    // Last: the function pointers above point into it.
    _library: libloading::Library,
}

// SAFETY: the header requires a launcher to be thread-compatible (calls may come from any
// thread as long as they never overlap), and every call takes `&mut self`, so moving the
// launcher to another thread is sound. It is not `Sync`: calls must not overlap.
unsafe impl Send for LauncherLibrary {}

impl LauncherLibrary {
    /// Loads the library at `path`, checks its ABI version first, resolves every function and
    /// opens it with `options`. The error is one line, naming the file.
    pub fn load(path: &str, options: &str) -> Result<LauncherLibrary, String> {
        let options =
            CString::new(options).map_err(|_| "`options` contains a NUL byte".to_string())?;
        // SAFETY: loading runs the library's initializers: that is the one thing this worker
        // process exists for, and a crash in them only ends this process.
        let library = unsafe { libloading::Library::new(path) }.map_err(|e| {
            // The loader's own message ("PATH: invalid ELF header") is in the source.
            let detail =
                std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
            match detail.strip_prefix(path) {
                Some(rest) => format!("cannot load legacy launcher {path}{rest}"),
                None => format!("cannot load legacy launcher {path}: {detail}"),
            }
        })?;
        // SAFETY: the symbol, if present, has the header's type for this name.
        let version = unsafe { library.get::<AbiVersionFn>(SYM_ABI_VERSION.as_bytes()) }
            .map(|f| *f)
            .map_err(|_| {
                format!(
                    "{path} is not a flowrun legacy launcher: it has no symbol {SYM_ABI_VERSION} (see flowrun_legacy.h)"
                )
            })?;
        // SAFETY: the header says this function takes nothing and only returns a constant.
        let found = unsafe { version() };
        if found != ABI_VERSION {
            return Err(format!(
                "{path} implements flowrun legacy launcher ABI version {found}, but this flowrun supports version {ABI_VERSION}: rebuild it against this flowrun's flowrun_legacy.h"
            ));
        }
        let mut missing = Vec::new();
        macro_rules! resolve {
            ($name:literal, $ty:ty) => {
                // SAFETY: the version matched, so a symbol of this name has the header's type.
                match unsafe { library.get::<$ty>(concat!($name, "\0").as_bytes()) } {
                    Ok(f) => Some(*f),
                    Err(_) => {
                        missing.push($name);
                        None
                    }
                }
            };
        }
        let open = resolve!("flowrun_legacy_open", OpenFn);
        let launch = resolve!("flowrun_legacy_launch", LaunchFn);
        let poll = resolve!("flowrun_legacy_poll", PollFn);
        let kill = resolve!("flowrun_legacy_kill", KillFn);
        let free_job = resolve!("flowrun_legacy_free_job", FreeJobFn);
        let free_string = resolve!("flowrun_legacy_free_string", FreeStringFn);
        let close = resolve!("flowrun_legacy_close", CloseFn);
        let (
            Some(open),
            Some(launch),
            Some(poll),
            Some(kill),
            Some(free_job),
            Some(free_string),
            Some(close),
        ) = (open, launch, poll, kill, free_job, free_string, close)
        else {
            let s = if missing.len() == 1 { "" } else { "s" };
            return Err(format!(
                "{path} is not a complete flowrun legacy launcher: missing symbol{s} {} (flowrun_legacy.h requires every function)",
                missing.join(", ")
            ));
        };
        let mut lib = LauncherLibrary {
            launch,
            poll,
            kill,
            free_job,
            free_string,
            close,
            instance: ptr::null_mut(),
            _library: library,
        };
        let mut instance = ptr::null_mut();
        let mut error = ptr::null_mut();
        // SAFETY: `options` is a valid C string; both out-pointers are valid for writes.
        let code = unsafe { open(options.as_ptr(), &mut instance, &mut error) };
        let error = lib.take_string(error);
        if code != OK {
            return Err(format!(
                "{path}: flowrun_legacy_open failed: {}",
                error.as_deref().unwrap_or("no reason given")
            ));
        }
        lib.instance = instance;
        Ok(lib)
    }

    /// Copies a string the library handed out and gives it back to the library.
    fn take_string(&mut self, s: *mut c_char) -> Option<String> {
        if s.is_null() {
            return None;
        }
        // SAFETY: the header says a non-NULL string from the library is NUL-terminated and
        // stays valid until flowrun_legacy_free_string, called right after the copy.
        let copy = unsafe { CStr::from_ptr(s) }
            .to_string_lossy()
            .trim_end()
            .to_string();
        // SAFETY: `s` came from the library and is freed exactly once, here.
        unsafe { (self.free_string)(s) };
        Some(copy)
    }

    /// Calls `flowrun_legacy_launch`.
    pub fn launch(&mut self, job: &CJob) -> LaunchResult {
        let spec = job.spec();
        let mut handle = ptr::null_mut();
        let mut native_id = ptr::null_mut();
        let mut error = ptr::null_mut();
        // SAFETY: `spec` points into `job`, alive for the call; the out-pointers are valid for
        // writes; `instance` came from open.
        let code = unsafe {
            (self.launch)(
                self.instance,
                &spec,
                &mut handle,
                &mut native_id,
                &mut error,
            )
        };
        let native_id = self.take_string(native_id);
        let error = self.take_string(error);
        let job = NonNull::new(handle).map(JobHandle);
        let job = match (code, job) {
            (BUSY | ERROR, Some(stray)) => {
                // A handle set despite a refusal (nothing started): the launcher owns it; give
                // it back.
                self.free_job(stray);
                None
            }
            // OK, or a code of no meaning: the caller kills and frees such a job.
            (_, job) => job,
        };
        LaunchResult {
            code,
            job,
            native_id,
            error,
        }
    }

    /// Calls `flowrun_legacy_poll`.
    pub fn poll(&mut self, job: &mut JobHandle) -> PollResult {
        let mut status = StatusC {
            state: RUNNING,
            code: 0,
            message: ptr::null_mut(),
            cpu_s: -1.0,
            max_rss_mb: -1.0,
        };
        // SAFETY: the handle came from launch and was not freed (it is owned by `job`);
        // `status` is valid for reads and writes.
        let code = unsafe { (self.poll)(self.instance, job.0.as_ptr(), &mut status) };
        let message = self.take_string(status.message);
        let known = |v: f64| (v.is_finite() && v >= 0.0).then_some(v);
        PollResult {
            code,
            state: status.state,
            value: status.code,
            message,
            cpu_s: known(status.cpu_s),
            max_rss_mb: known(status.max_rss_mb),
        }
    }

    /// Calls `flowrun_legacy_kill`: `Err` with the error string when it failed.
    pub fn kill(&mut self, job: &mut JobHandle) -> Result<(), Option<String>> {
        let mut error = ptr::null_mut();
        // SAFETY: as for poll; `error` is valid for writes.
        let code = unsafe { (self.kill)(self.instance, job.0.as_ptr(), &mut error) };
        let error = self.take_string(error);
        if code == OK {
            Ok(())
        } else {
            Err(error)
        }
    }

    /// Calls `flowrun_legacy_free_job`.
    pub fn free_job(&mut self, job: JobHandle) {
        // SAFETY: the handle came from launch and is consumed here, so it is freed once.
        unsafe { (self.free_job)(self.instance, job.0.as_ptr()) };
    }

    /// Calls `flowrun_legacy_close`. Every job must have been freed.
    pub fn close(self) {
        // SAFETY: `instance` came from open and is closed once: `self` is consumed.
        unsafe { (self.close)(self.instance) };
    }
}
