//! Graph checks and selection over the expanded jobs. Everything here is iterative: chains of
//! millions of jobs must not overflow the stack.

use globset::{Glob, GlobMatcher};

use super::{
    diag::{did_you_mean_help, fmt_location, nearest, Diagnostic},
    model::{Flow, Job},
};

/// At most this many cycles are reported.
const MAX_CYCLES: usize = 5;
/// Longer cycle paths are shortened in messages.
const MAX_PATH_SHOWN: usize = 24;

/// Finds dependency cycles (up to [`MAX_CYCLES`], not two through the same back-edge target);
/// each is a path `a -> b -> ... -> a` where each job needs the next.
pub(super) fn find_cycles(jobs: &[Job]) -> Vec<Vec<u32>> {
    const WHITE: u8 = 0;
    const GREY: u8 = 1;
    const BLACK: u8 = 2;
    let mut color = vec![WHITE; jobs.len()];
    // Jobs on an already reported cycle.
    let mut reported = vec![false; jobs.len()];
    let mut cycles = Vec::new();
    let mut stack: Vec<(u32, u32)> = Vec::new(); // (job, next edge)
    for root in 0..jobs.len() {
        if color[root] != WHITE {
            continue;
        }
        color[root] = GREY;
        stack.push((root as u32, 0));
        while let Some(&mut (node, ref mut edge)) = stack.last_mut() {
            let needs = &jobs[node as usize].needs;
            if let Some(&next) = needs.get(*edge as usize) {
                *edge += 1;
                match color[next as usize] {
                    WHITE => {
                        color[next as usize] = GREY;
                        stack.push((next, 0));
                    }
                    // One report per group of jobs: skip cycles through an already reported job.
                    GREY if cycles.len() < MAX_CYCLES && !reported[next as usize] => {
                        let start = stack.iter().rposition(|&(n, _)| n == next).unwrap_or(0);
                        let mut cycle: Vec<u32> = stack[start..].iter().map(|&(n, _)| n).collect();
                        for &n in &cycle {
                            reported[n as usize] = true;
                        }
                        cycle.push(next);
                        cycles.push(cycle);
                    }
                    _ => {}
                }
            } else {
                color[node as usize] = BLACK;
                stack.pop();
            }
        }
        if cycles.len() >= MAX_CYCLES {
            break;
        }
    }
    cycles
}

/// `a -> b -> c -> a`, shortened in the middle when very long.
pub(super) fn cycle_path(jobs: &[Job], cycle: &[u32]) -> String {
    let name = |i: &u32| jobs[*i as usize].name.as_str();
    if cycle.len() <= MAX_PATH_SHOWN {
        return cycle.iter().map(name).collect::<Vec<_>>().join(" -> ");
    }
    let half = MAX_PATH_SHOWN / 2;
    let head: Vec<&str> = cycle[..half].iter().map(name).collect();
    let tail: Vec<&str> = cycle[cycle.len() - half..].iter().map(name).collect();
    format!(
        "{} -> ... ({} more) ... -> {}",
        head.join(" -> "),
        cycle.len() - 2 * half,
        tail.join(" -> ")
    )
}

pub(super) fn cycle_diagnostics(jobs: &[Job]) -> Vec<Diagnostic> {
    find_cycles(jobs)
        .into_iter()
        .map(|cycle| {
            let first = &jobs[cycle[0] as usize];
            let second = &jobs[cycle[1] as usize];
            Diagnostic::at(first.location.clone(), format!("dependency cycle: {}", cycle_path(jobs, &cycle))).with_help(format!(
                "each job needs the next one, so none can start; remove one of these dependencies (e.g. `{}` from the needs of `{}`, {})",
                second.name,
                first.name,
                fmt_location(&first.location)
            ))
        })
        .collect()
}

/// Also returns, per kept job, whether a glob named it (rather than it being only needed by a
/// named job), for `--no-deps`.
pub(super) fn select(flow: Flow, only: &[String]) -> Result<(Flow, Vec<bool>), Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut matchers: Vec<(&str, Option<GlobMatcher>)> = Vec::new();
    for pattern in only {
        if pattern.contains(['*', '?', '[', '{']) {
            match Glob::new(pattern) {
                Ok(g) => matchers.push((pattern, Some(g.compile_matcher()))),
                Err(e) => diags.push(Diagnostic::global(format!(
                    "--only: invalid glob `{pattern}`: {}",
                    e.kind()
                ))),
            }
        } else {
            matchers.push((pattern, None));
        }
    }
    let mut keep = vec![false; flow.jobs.len()];
    let mut stack: Vec<u32> = Vec::new();
    for (pattern, matcher) in &matchers {
        let mut matched = false;
        for (i, job) in flow.jobs.iter().enumerate() {
            let hit = match matcher {
                Some(m) => m.is_match(job.name.as_str()),
                None => job.name == *pattern,
            };
            if hit {
                matched = true;
                if !keep[i] {
                    keep[i] = true;
                    stack.push(i as u32);
                }
            }
        }
        if !matched {
            let found = if matcher.is_none() {
                nearest(pattern, flow.jobs.iter().map(|j| j.name.as_str()), 3)
            } else {
                Vec::new()
            };
            diags.push(
                Diagnostic::global(format!(
                    "--only `{pattern}` matches no job in flow `{}`",
                    flow.name
                ))
                .with_opt_help(did_you_mean_help(&found)),
            );
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    let named = keep.clone();
    while let Some(i) = stack.pop() {
        for &d in &flow.jobs[i as usize].needs {
            if !keep[d as usize] {
                keep[d as usize] = true;
                stack.push(d);
            }
        }
    }
    let mut new_index = vec![u32::MAX; flow.jobs.len()];
    let mut next = 0u32;
    for (i, k) in keep.iter().enumerate() {
        if *k {
            new_index[i] = next;
            next += 1;
        }
    }
    let Flow {
        name,
        file,
        max_parallel,
        backends,
        observers,
        resources,
        jobs,
    } = flow;
    let named = named
        .into_iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(n, _)| n)
        .collect();
    let jobs = jobs
        .into_iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(mut job, _)| {
            for d in &mut job.needs {
                *d = new_index[*d as usize];
            }
            job
        })
        .collect();
    let flow = Flow {
        name,
        file,
        max_parallel,
        backends,
        observers,
        resources,
        jobs,
    };
    Ok((flow, named))
}
