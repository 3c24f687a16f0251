/*
 * flowrun_legacy.h: the C interface of a legacy launcher driven by flowrun's `legacy` backend.
 *
 * A legacy launcher is a shared library (C, C++, Go with cgo, Zig, Rust, ...) that starts
 * jobs, answers non-blocking polls about them and kills them. flowrun loads it into a worker
 * process of its own (never into flowrun itself), calls `flowrun_legacy_abi_version` before
 * anything else, resolves every function below, then calls `flowrun_legacy_open` once.
 *
 * Rules that hold for every function:
 * - Integer codes, never C enums: every code is an int32_t (or uint32_t for the version).
 * - Calls on one launcher never overlap: a launcher needs no locking of its own. flowrun makes
 *   them from one thread of the worker process (thread-compatible is enough; thread-safe is
 *   not required).
 * - No call may block for long: `poll` must not wait for the job, `launch` and `kill` should
 *   take milliseconds. A call that has not returned after the backend's `call_timeout` makes
 *   flowrun kill the worker; its jobs then fail as lost.
 * - Strings flowrun passes in (`const char *`) are NUL-terminated UTF-8, owned by flowrun and
 *   valid only during the call: copy what you keep.
 * - Strings a launcher hands out (`char **` out-parameters, `message` of a status) are owned by
 *   the launcher: allocate them as you like; flowrun copies each one and then passes it to
 *   `flowrun_legacy_free_string` exactly once. NULL means "no string".
 * - A job handle is owned by the launcher. flowrun passes it to `flowrun_legacy_free_job`
 *   exactly once, after the job ended (a terminal poll, a poll error, or a kill), and never
 *   uses it afterwards.
 * - Crashing (SIGSEGV, abort(), exit()) only takes the worker down: flowrun reports the
 *   launcher's running jobs lost ("legacy launcher crashed: SIGSEGV"), kills every process the
 *   worker left behind, and starts a fresh worker for the next jobs.
 */
#ifndef FLOWRUN_LEGACY_H
#define FLOWRUN_LEGACY_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this interface. A launcher returns it from flowrun_legacy_abi_version();
 * flowrun refuses a launcher built against another version (exit code 2). */
#define FLOWRUN_LEGACY_ABI_VERSION 1u

/* Return codes of open, launch, poll and kill. */
#define FLOWRUN_LEGACY_OK 0
/* launch only: cannot take the job now (a queue or license limit): flowrun offers it again
 * later, with the scheduler's backoff. */
#define FLOWRUN_LEGACY_BUSY 1
/* The call failed; its error string (or status message) says why. */
#define FLOWRUN_LEGACY_ERROR (-1)

/* flowrun_legacy_status.state */
#define FLOWRUN_LEGACY_RUNNING 0  /* still running (or queued): poll again later */
#define FLOWRUN_LEGACY_EXITED 1   /* exited; `code` is the exit code (0 passes, unless the log
                                     says otherwise) */
#define FLOWRUN_LEGACY_SIGNALED 2 /* died of signal `code` */
#define FLOWRUN_LEGACY_FAILED 3   /* the launcher judged it failed: `message` says why (required);
                                     `code` is its exit code, or -1 */

/* The launcher's own state, one per backend instance. Opaque to flowrun. */
typedef struct flowrun_legacy_launcher flowrun_legacy_launcher;
/* One launched job. Opaque to flowrun. */
typedef struct flowrun_legacy_job flowrun_legacy_job;

/* Everything about one job. Every pointer is owned by flowrun, valid during the call. */
typedef struct flowrun_legacy_job_spec {
    /* The job's name, unique within the run. */
    const char *name;
    /* 1: argv is {script, NULL}, to run with `/bin/sh -c script`. 0: argv is the argv to run
     * directly, argv[0] looked up on PATH. */
    int32_t shell;
    /* NULL-terminated. */
    const char *const *argv;
    /* NULL-terminated "NAME=VALUE" entries to set on top of the launcher's own environment
     * (the worker's environment is flowrun's). They include FLOWRUN_JOB_NAME,
     * FLOWRUN_JOB_DIR, FLOWRUN_RUN_DIR, FLOWRUN_ATTEMPT and FLOWRUN_RUN_TAG. */
    const char *const *env;
    /* The directory to run in (absolute). */
    const char *cwd;
    /* The job's private directory (absolute, exists). */
    const char *job_dir;
    /* Where the job's stdout and stderr must go (absolute). flowrun has created it empty just
     * before this call; open it for appending. */
    const char *log_path;
    /* The run's output directory and its tag (unique per run, usable as a cluster job
     * name). */
    const char *run_dir;
    const char *run_tag;
    /* The job's time limit in milliseconds, or -1. flowrun enforces it itself (it calls kill
     * when it expires); a launcher may pass it on to a cluster. */
    int64_t timeout_ms;
    /* CPUs the job asks for (at least 1), memory in MiB or -1. */
    uint32_t cpus;
    int64_t memory_mb;
    /* Which attempt this is, from 1. */
    uint32_t attempt;
} flowrun_legacy_job_spec;

/* What a poll found. flowrun fills in the defaults shown before each call. */
typedef struct flowrun_legacy_status {
    int32_t state;     /* FLOWRUN_LEGACY_RUNNING */
    int32_t code;      /* 0 */
    char *message;     /* NULL; launcher-owned (freed with flowrun_legacy_free_string) */
    double cpu_s;      /* -1: unknown. User + system CPU seconds of the job, once it ended. */
    double max_rss_mb; /* -1: unknown. Peak memory of the job in MiB, once it ended. */
} flowrun_legacy_status;

/* Returns FLOWRUN_LEGACY_ABI_VERSION. Called first; must not need open(). */
uint32_t flowrun_legacy_abi_version(void);

/* Creates the launcher's state from the backend's `options` string ("" when unset).
 * OK: *launcher is set. ERROR: *error may say why (the backend then fails to start, exit 2). */
int32_t flowrun_legacy_open(const char *options, flowrun_legacy_launcher **launcher,
                            char **error);

/* Starts a job. OK: *job is set, and *native_id may be set to the job's id in the launcher's
 * world (a cluster job id), shown to the user. BUSY: nothing started; offered again later.
 * ERROR: nothing started; *error may say why; the job fails with "launch failed: <error>" and
 * is never polled. */
int32_t flowrun_legacy_launch(flowrun_legacy_launcher *launcher,
                              const flowrun_legacy_job_spec *spec, flowrun_legacy_job **job,
                              char **native_id, char **error);

/* Looks at a job without waiting for it. OK: *status says how it is. ERROR: the poll itself
 * failed; status->message may say why; the job fails with "poll failed: <message>", flowrun
 * calls kill on it (so that nothing runs on unobserved) and then frees it. */
int32_t flowrun_legacy_poll(flowrun_legacy_launcher *launcher, flowrun_legacy_job *job,
                            flowrun_legacy_status *status);

/* Kills a job and returns once it is dead, or certain to die (a cluster accepted the
 * cancellation). Idempotent: killing a job that already ended is OK. After it returns flowrun
 * reports the job killed (OK) or lost with "kill failed: <error>" (ERROR), never polls it
 * again, and frees it. */
int32_t flowrun_legacy_kill(flowrun_legacy_launcher *launcher, flowrun_legacy_job *job,
                            char **error);

/* Releases a job handle. Called exactly once per handle. */
void flowrun_legacy_free_job(flowrun_legacy_launcher *launcher, flowrun_legacy_job *job);

/* Releases a string the launcher handed out. Called exactly once per non-NULL string. */
void flowrun_legacy_free_string(char *s);

/* Releases the launcher, after every job handle was freed. Called once, at shutdown. */
void flowrun_legacy_close(flowrun_legacy_launcher *launcher);

#ifdef __cplusplus
}
#endif

#endif /* FLOWRUN_LEGACY_H */
