//! Definition hashes: what decides, on `--resume` and `--rerun-failed`, whether a job that
//! passed can count as passed again.
//!
//! A job's hash covers everything that can change what it does or how it is judged: its
//! command, `cwd`, `env`, timeout, backend instance (name, kind and config), `when`, resources,
//! pass and fail patterns, `interactive` and `attrs`; and the hashes of every job it needs, so
//! that a change reaches everything downstream. It leaves out what only changes the order or
//! the bookkeeping: the name (a renamed job is another job), `priority`, retries and where the
//! job is written in the file.
//!
//! The hash is XXH3-128 over a length-prefixed encoding of those fields: stable across
//! machines and flowrun versions (the encoding is this file's, the hash is specified), and
//! about ten times cheaper than SHA-256 for a million jobs. A collision would keep a changed
//! job's old verdict; at 128 bits an accidental one does not happen, and flows are not
//! adversaries.

use std::sync::Arc;

use xxhash_rust::xxh3::{xxh3_128, Xxh3Default};

use super::codec::Put;
use crate::flow::{Command, Flow, Job, Patterns, When};

/// A definition hash.
pub type Hash = [u8; 16];

/// Every job's definition hash, by job index. Linear in jobs plus dependencies; iterative, so a
/// million-long chain needs no deep stack.
pub fn definition_hashes(flow: &Flow) -> Vec<Hash> {
    let n = flow.jobs.len();
    let backends: Vec<Hash> = flow
        .backends
        .iter()
        .map(|b| {
            let mut buf = Vec::new();
            buf.put_str(&b.name);
            buf.put_str(&b.kind);
            buf.put_str(&b.config_toml);
            buf.put_u64(b.max_parallel.map_or(0, |m| u64::from(m) + 1));
            xxh3_128(&buf).to_le_bytes()
        })
        .collect();
    let mut hashes: Vec<Option<Hash>> = vec![None; n];
    let mut patterns_cache: Option<(*const Patterns, Hash)> = None;
    let mut buf = Vec::with_capacity(256);
    let mut deps: Vec<Hash> = Vec::new();
    let mut stack: Vec<u32> = Vec::new();
    // Each job is pushed once per dependent plus once as a root: more steps than that would
    // mean a cycle, which the loader refuses; never loop on one.
    let mut budget: usize = flow.jobs.iter().map(|j| j.needs.len() + 2).sum::<usize>() * 2;
    for root in 0..n {
        if hashes[root].is_some() {
            continue;
        }
        stack.push(root as u32);
        while let Some(&j) = stack.last() {
            budget = budget
                .checked_sub(1)
                .expect("definition hashes: the flow's dependencies have a cycle");
            let job = &flow.jobs[j as usize];
            if hashes[j as usize].is_some() {
                stack.pop();
                continue;
            }
            // Dependencies first (the flow is a DAG: validated at load).
            let before = stack.len();
            for &d in &job.needs {
                if hashes[d as usize].is_none() {
                    stack.push(d);
                }
            }
            if stack.len() > before {
                continue;
            }
            stack.pop();
            deps.clear();
            deps.extend(
                job.needs
                    .iter()
                    .map(|&d| hashes[d as usize].expect("hashed first")),
            );
            // Order-free: adding a job to the flow shifts indices, not definitions.
            deps.sort_unstable();
            let patterns = job.patterns.as_ref().map(|p| {
                let ptr = Arc::as_ptr(p);
                match patterns_cache {
                    Some((cached, h)) if cached == ptr => h,
                    _ => {
                        let h = patterns_hash(p);
                        patterns_cache = Some((ptr, h));
                        h
                    }
                }
            });
            buf.clear();
            encode_job(
                &mut buf,
                flow,
                job,
                &backends[job.backend],
                patterns.as_ref(),
            );
            buf.put_u64(deps.len() as u64);
            for d in &deps {
                buf.put_bytes(d);
            }
            hashes[j as usize] = Some(xxh3_128(&buf).to_le_bytes());
        }
    }
    hashes
        .into_iter()
        .map(|h| h.expect("every job hashed"))
        .collect()
}

/// The flow's identity: its name and every job's name and definition hash, in order.
///
/// Hashed in chunks as it is encoded (the same digest as hashing the whole encoding at once):
/// a million jobs' encoding is 25 MB the journal's start need not allocate.
pub fn flow_hash(flow: &Flow, hashes: &[Hash]) -> Hash {
    flow_hash_of(
        &flow.name,
        flow.jobs.iter().map(|j| j.name.as_str()).zip(hashes),
    )
}

/// [`flow_hash`] of a flow named `name` with these jobs (name, definition hash).
pub(super) fn flow_hash_of<'a>(
    name: &str,
    jobs: impl ExactSizeIterator<Item = (&'a str, &'a Hash)>,
) -> Hash {
    const CHUNK: usize = 1 << 16;
    let mut hasher = Xxh3Default::new();
    let mut buf = Vec::with_capacity(CHUNK + 512);
    buf.put_str(name);
    buf.put_u64(jobs.len() as u64);
    for (job, h) in jobs {
        buf.put_str(job);
        buf.put_bytes(h);
        if buf.len() >= CHUNK {
            hasher.update(&buf);
            buf.clear();
        }
    }
    hasher.update(&buf);
    hasher.digest128().to_le_bytes()
}

fn patterns_hash(p: &Patterns) -> Hash {
    let mut buf = Vec::new();
    buf.put_u64(p.pass.len() as u64);
    for r in &p.pass {
        buf.put_str(r.as_str());
    }
    buf.put_u64(p.fail_sources.len() as u64);
    for s in &p.fail_sources {
        buf.put_str(s);
    }
    xxh3_128(&buf).to_le_bytes()
}

fn encode_job(buf: &mut Vec<u8>, flow: &Flow, job: &Job, backend: &Hash, patterns: Option<&Hash>) {
    match &job.cmd {
        Command::Shell(s) => {
            buf.put_u8(0);
            buf.put_str(s);
        }
        Command::Argv(v) => {
            buf.put_u8(1);
            buf.put_u64(v.len() as u64);
            for a in v {
                buf.put_str(a);
            }
        }
    }
    buf.put_opt_str(job.cwd.as_deref().map(|p| p.to_string_lossy()).as_deref());
    buf.put_u64(job.env.len() as u64);
    for (k, v) in &job.env {
        buf.put_str(k);
        buf.put_str(v);
    }
    match &job.timeout {
        None => buf.put_u8(0),
        Some((d, _)) => {
            buf.put_u8(1);
            buf.put_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        }
    }
    buf.put_bytes(backend);
    buf.put_u8(match job.when {
        When::AllPassed => 0,
        When::AnyPassed => 1,
        When::Always => 2,
    });
    buf.put_u64(job.cpus.into());
    buf.put_u64(job.memory_mb.map_or(0, |m| m.saturating_add(1)));
    buf.put_u64(job.resources.len() as u64);
    for &(r, amount) in &job.resources {
        buf.put_str(&flow.resources[r as usize].0);
        buf.put_u64(amount);
    }
    match patterns {
        None => buf.put_u8(0),
        Some(h) => {
            buf.put_u8(1);
            buf.put_bytes(h);
        }
    }
    buf.put_u8(job.interactive.into());
    buf.put_u64(job.attrs.len() as u64);
    for (k, v) in &job.attrs {
        buf.put_str(k);
        buf.put_str(v);
    }
}
