/*
 * An example legacy launcher in C: runs each job as a local process group with posix_spawn.
 * A site's launcher would submit to its cluster in launch(), ask the cluster in poll() and
 * cancel in kill(); the shape stays the same. Build: make (produces liblauncher.so here).
 *
 * options: "grace_ms=N": how long kill waits after SIGTERM before SIGKILL (default 2000).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "flowrun_legacy.h"

struct flowrun_legacy_launcher { long grace_ms; };
struct flowrun_legacy_job { pid_t pid; int reaped; };

static char *message(const char *what, int err) {
    char *s = NULL;
    return asprintf(&s, "%s: %s", what, strerror(err)) < 0 ? NULL : s;
}

uint32_t flowrun_legacy_abi_version(void) { return FLOWRUN_LEGACY_ABI_VERSION; }

int32_t flowrun_legacy_open(const char *options, flowrun_legacy_launcher **out, char **error) {
    flowrun_legacy_launcher *l = malloc(sizeof *l);
    if (!l) return FLOWRUN_LEGACY_ERROR;
    l->grace_ms = 2000;
    const char *g = strstr(options, "grace_ms=");
    if (g) l->grace_ms = atol(g + strlen("grace_ms="));
    (void)error;
    *out = l;
    return FLOWRUN_LEGACY_OK;
}

int32_t flowrun_legacy_launch(flowrun_legacy_launcher *l, const flowrun_legacy_job_spec *spec,
                              flowrun_legacy_job **job, char **native_id, char **error) {
    (void)l;
    /* env(1) applies the job's variables on top of ours: argv = env NAME=VALUE... command. */
    size_t nenv = 0, nargs = 0;
    while (spec->env[nenv]) nenv++;
    while (spec->argv[nargs]) nargs++;
    const char **argv = calloc(nenv + nargs + 5, sizeof *argv);
    size_t k = 0;
    argv[k++] = "env";
    for (size_t i = 0; i < nenv; i++) argv[k++] = spec->env[i];
    if (spec->shell) {
        argv[k++] = "/bin/sh";
        argv[k++] = "-c";
    }
    for (size_t i = 0; i < nargs; i++) argv[k++] = spec->argv[i];

    posix_spawn_file_actions_t files;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&files);
    posix_spawn_file_actions_addopen(&files, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&files, 1, spec->log_path, O_WRONLY | O_APPEND, 0);
    posix_spawn_file_actions_adddup2(&files, 1, 2);
    posix_spawn_file_actions_addchdir_np(&files, spec->cwd);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP); /* its own group, to kill it whole */
    posix_spawnattr_setpgroup(&attr, 0);
    extern char **environ;
    pid_t pid;
    int err = posix_spawnp(&pid, "env", &files, &attr, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&files);
    posix_spawnattr_destroy(&attr);
    free(argv);
    if (err) {
        *error = message("posix_spawn", err);
        return FLOWRUN_LEGACY_ERROR;
    }
    *job = calloc(1, sizeof **job);
    (*job)->pid = pid;
    if (asprintf(native_id, "pid %d", (int)pid) < 0) *native_id = NULL;
    return FLOWRUN_LEGACY_OK;
}

int32_t flowrun_legacy_poll(flowrun_legacy_launcher *l, flowrun_legacy_job *job,
                            flowrun_legacy_status *status) {
    (void)l;
    int st;
    pid_t r = waitpid(job->pid, &st, WNOHANG);
    if (r == 0) return FLOWRUN_LEGACY_OK; /* still running */
    if (r < 0) {
        status->message = message("waitpid", errno);
        return FLOWRUN_LEGACY_ERROR;
    }
    job->reaped = 1;
    status->state = WIFSIGNALED(st) ? FLOWRUN_LEGACY_SIGNALED : FLOWRUN_LEGACY_EXITED;
    status->code = WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st);
    return FLOWRUN_LEGACY_OK;
}

int32_t flowrun_legacy_kill(flowrun_legacy_launcher *l, flowrun_legacy_job *job, char **error) {
    (void)error;
    if (job->reaped) return FLOWRUN_LEGACY_OK;
    killpg(job->pid, SIGTERM);
    struct timespec tick = {0, 10 * 1000 * 1000};
    for (long waited = 0; waited < l->grace_ms; waited += 10) {
        if (waitpid(job->pid, NULL, WNOHANG) == job->pid) {
            job->reaped = 1;
            break;
        }
        nanosleep(&tick, NULL);
    }
    killpg(job->pid, SIGKILL); /* the rest of its group, or all of it */
    if (!job->reaped) waitpid(job->pid, NULL, 0);
    job->reaped = 1;
    return FLOWRUN_LEGACY_OK;
}

void flowrun_legacy_free_job(flowrun_legacy_launcher *l, flowrun_legacy_job *job) {
    (void)l;
    free(job);
}

void flowrun_legacy_free_string(char *s) { free(s); }

void flowrun_legacy_close(flowrun_legacy_launcher *l) { free(l); }
