//! Failure buckets: jobs that did not pass, grouped by their reason with the parts that differ
//! from job to job masked, so that "exit code 3" from 400 seeds, or "UVM_ERROR at 0x1f00 in
//! /scratch/seed17/tb.sv" across seeds, is one bucket.
//!
//! Masked, in one left-to-right pass: paths (a run of name characters with at least one `/`)
//! become `<path>`; hex ids (`0x...`, or 6+ hex digits mixing digits and letters, as in a
//! commit or a seed id) become `<hex>`; other numbers become `#`. Words made of the letters a-f
//! alone ("facade") are not ids and are kept.

use std::sync::OnceLock;

use regex::{Captures, Regex};

fn pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(concat!(
            r"(?P<path>(?:~|\.{1,2})?(?:/[\w.+@%=-]+)+/?|[\w.+@%=-]+(?:/[\w.+@%=-]+)+/?)",
            r"|(?P<hex>\b0[xX][0-9a-fA-F]+\b|\b[0-9a-fA-F]{6,}\b)",
            r"|(?P<num>\d+(?:\.\d+)?)",
        ))
        .expect("the bucket pattern is valid")
    })
}

/// `reason` with paths, hex ids and numbers masked.
pub fn mask(reason: &str) -> String {
    pattern()
        .replace_all(reason, |c: &Captures<'_>| {
            if c.name("path").is_some() {
                "<path>".to_string()
            } else if let Some(hex) = c.name("hex") {
                let text = hex.as_str();
                let digits = text.bytes().any(|b| b.is_ascii_digit());
                let letters = text.bytes().any(|b| b.is_ascii_alphabetic());
                match (
                    text.starts_with("0x") || text.starts_with("0X"),
                    digits,
                    letters,
                ) {
                    (true, _, _) | (false, true, true) => "<hex>".to_string(),
                    (false, true, false) => "#".to_string(),
                    (false, false, _) => text.to_string(),
                }
            } else {
                "#".to_string()
            }
        })
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn what_differs_between_seeds_is_masked() {
        let cases = [
            ("exit code 3", "exit code #"),
            (
                "killed by signal 11 (SIGSEGV)",
                "killed by signal # (SIGSEGV)",
            ),
            ("timed out after 1.5s", "timed out after #s"),
            (
                "fail pattern matched at line 120: UVM_ERROR @ 100ns: bad CRC 0xdeadbeef",
                "fail pattern matched at line #: UVM_ERROR @ #ns: bad CRC <hex>",
            ),
            (
                "cannot open /scratch/u/seed_17/tb.sv for reading",
                "cannot open <path> for reading",
            ),
            ("see ./out/x.log and a/b.c", "see <path> and <path>"),
            ("build 3f9a2c41e7 failed", "build <hex> failed"),
            (
                "dependency failed: sim-dma-42",
                "dependency failed: sim-dma-#",
            ),
            ("a facade of beaded text", "a facade of beaded text"),
            (
                "lost by backend slurm: job 123456 vanished",
                "lost by backend slurm: job # vanished",
            ),
        ];
        for (reason, masked) in cases {
            assert_eq!(mask(reason), masked, "{reason}");
        }
    }

    #[test]
    fn reasons_that_differ_only_in_ids_share_a_bucket() {
        let a = mask("UVM_FATAL @ 1200ns: seed 17 mismatch at 0x00ff in /tmp/r1/jobs/s17/x.sv");
        let b = mask("UVM_FATAL @ 90ns: seed 4242 mismatch at 0x1 in /tmp/r1/jobs/s4242/x.sv");
        assert_eq!(a, b);
        assert_ne!(mask("UVM_FATAL: mismatch"), mask("UVM_ERROR: mismatch"));
    }
}
