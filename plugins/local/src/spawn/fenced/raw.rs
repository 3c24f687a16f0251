//! Raw-system-call helpers shared by the code that runs outside the host's normal rules:
//! the spawn child ([`super::child`]) and the watchdog ([`super::watchdog_child`]). Same
//! rules and lints as those (`docs/design/local-spawn.md`).

use syscalls::{syscall, Sysno};

/// Every signal to its default action: the host's handlers must not run in a process that
/// is not the host (nor in one sharing its memory), and ignored signals (Rust ignores
/// SIGPIPE) would stay ignored across exec. The kernel's struct sigaction, all zero, is
/// SIG_DFL.
pub(in crate::spawn) fn default_signal_actions() {
    let dfl = [0u64; 4];
    for sig in 1..=64usize {
        if sig != libc::SIGKILL as usize && sig != libc::SIGSTOP as usize {
            // SAFETY: `dfl` is a valid kernel sigaction; no old action is asked for.
            let _ = unsafe { syscall!(Sysno::rt_sigaction, sig, dfl.as_ptr(), 0, 8) };
        }
    }
}

/// Unblocks every signal (the host blocked them all around the clone or fork: I5).
pub(in crate::spawn) fn unblock_signals() {
    let empty = 0u64;
    // SAFETY: `empty` is a valid kernel sigset; no old mask is asked for.
    let _ = unsafe {
        syscall!(
            Sysno::rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            0,
            8
        )
    };
}

/// Sleeps `ms` milliseconds.
pub(in crate::spawn) fn sleep_ms(ms: u64) {
    let pause = libc::timespec {
        tv_sec: ms.checked_div(1000).unwrap_or(0) as libc::time_t,
        tv_nsec: ms.checked_rem(1000).unwrap_or(0).saturating_mul(1_000_000) as libc::c_long,
    };
    // SAFETY: `pause` is a valid timespec; no remainder is asked for.
    let _ = unsafe { syscall!(Sysno::nanosleep, &pause as *const libc::timespec, 0) };
}

/// Ends the process (I8).
pub(in crate::spawn) fn exit(code: i32) -> ! {
    // SAFETY: exit_group has no memory arguments and does not return.
    let _ = unsafe { syscall!(Sysno::exit_group, code) };
    // Never reached: exit_group does not return.
    loop {
        std::hint::spin_loop();
    }
}
