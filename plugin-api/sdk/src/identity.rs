//! The identity note: what a plugin library is (name, version, ABI version, the kinds it
//! offers), written by the export macros into an ELF section of its own, so that the host can
//! read it with an ELF parser **without loading the library**. A library is only ever
//! `dlopen`ed when a command needs what it offers; a broken one on the plugin path costs a line
//! in `flowrun plugins list`, never a crash.
//!
//! Format: the section [`SECTION`] holds records one after the other (a linker may put zero
//! bytes between them). A record is
//!
//! ```text
//! MAGIC "FLRN" | format u8 (1) | kind u8 | body length u32 LE | body
//! body = fields, each: length u32 LE | UTF-8 bytes
//! ```
//!
//! Kinds: [`PLUGIN`] (fields: ABI version, plugin name, plugin version; exactly one per
//! library), [`BACKEND`] and [`OBSERVER`] (fields: kind name, description). A reader skips
//! records of an unknown format or kind by their body length, so both can be added without
//! breaking older hosts.
//!
//! The records are built at compile time by the `const fn`s below and placed with
//! `#[link_section]`; each is referenced from code the linker keeps (the exported identity
//! function, the kind registrations in `.init_array`), so `--gc-sections` cannot drop them.

/// The ELF section that holds the records.
pub const SECTION: &str = ".flowrun_plugin";
/// The first bytes of every record.
pub const MAGIC: [u8; 4] = *b"FLRN";
/// The record format this SDK writes.
pub const FORMAT: u8 = 1;
/// A record naming the plugin.
pub const PLUGIN: u8 = 1;
/// A record for one backend kind.
pub const BACKEND: u8 = 2;
/// A record for one observer kind.
pub const OBSERVER: u8 = 3;

const HEADER_LEN: usize = 10;
/// Fields longer than this make a record invalid: no honest name or description is that long,
/// and the host echoes these strings.
pub const MAX_FIELD_LEN: usize = 4096;

/// The encoded length of a record with `fields`.
pub const fn record_len(fields: &[&str]) -> usize {
    let mut len = HEADER_LEN;
    let mut i = 0;
    while i < fields.len() {
        len += 4 + fields[i].len();
        i += 1;
    }
    len
}

/// Encodes a record of `kind` with `fields`; `N` must be [`record_len`] of them (the macros
/// compute both in one constant, so a mismatch is a compile-time error).
pub const fn record<const N: usize>(kind: u8, fields: &[&str]) -> [u8; N] {
    let mut out = [0u8; N];
    write_record(&mut out, kind, fields);
    out
}

/// [`record`] at run time (for tools and tests that write notes).
pub fn record_bytes(kind: u8, fields: &[&str]) -> Vec<u8> {
    let mut out = vec![0u8; record_len(fields)];
    write_record(&mut out, kind, fields);
    out
}

const fn write_record(out: &mut [u8], kind: u8, fields: &[&str]) {
    assert!(out.len() == record_len(fields), "record length mismatch");
    let mut at = 0;
    while at < 4 {
        out[at] = MAGIC[at];
        at += 1;
    }
    out[4] = FORMAT;
    out[5] = kind;
    let body = (out.len() - HEADER_LEN) as u32;
    write_u32(out, 6, body);
    at = HEADER_LEN;
    let mut i = 0;
    while i < fields.len() {
        let bytes = fields[i].as_bytes();
        assert!(
            bytes.len() <= MAX_FIELD_LEN,
            "a plugin identity field is too long"
        );
        write_u32(out, at, bytes.len() as u32);
        at += 4;
        let mut j = 0;
        while j < bytes.len() {
            out[at] = bytes[j];
            at += 1;
            j += 1;
        }
        i += 1;
    }
}

const fn write_u32(out: &mut [u8], at: usize, value: u32) {
    let bytes = value.to_le_bytes();
    let mut i = 0;
    while i < 4 {
        out[at + i] = bytes[i];
        i += 1;
    }
}

/// One kind a plugin offers, as its note records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindNote {
    /// The kind's name.
    pub name: String,
    /// Its one-line description.
    pub description: String,
}

/// A plugin's identity, decoded from its note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginNote {
    /// The ABI version the plugin was built against.
    pub api_version: String,
    /// The plugin's name.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// Backend kinds, in no particular order.
    pub backends: Vec<KindNote>,
    /// Observer kinds.
    pub observers: Vec<KindNote>,
}

/// Decodes the contents of the [`SECTION`] section. An error says what is wrong in one line.
pub fn decode(section: &[u8]) -> Result<PluginNote, String> {
    let mut plugin: Option<(String, String, String)> = None;
    let mut backends = Vec::new();
    let mut observers = Vec::new();
    let mut rest = section;
    loop {
        // Linkers may align input sections: skip the padding between records.
        while let [0, tail @ ..] = rest {
            rest = tail;
        }
        if rest.is_empty() {
            break;
        }
        if rest.len() < HEADER_LEN || rest[..4] != MAGIC {
            return Err("the identity note is corrupt (bad record header)".into());
        }
        let (format, kind) = (rest[4], rest[5]);
        let body_len = u32::from_le_bytes([rest[6], rest[7], rest[8], rest[9]]) as usize;
        let Some(body) = rest.get(HEADER_LEN..HEADER_LEN.saturating_add(body_len)) else {
            return Err("the identity note is corrupt (a record runs past the section)".into());
        };
        rest = &rest[HEADER_LEN + body_len..];
        if format != FORMAT {
            continue; // a newer SDK's record: nothing this host needs
        }
        let fields = fields(body)?;
        match (kind, fields.as_slice()) {
            (PLUGIN, [api, name, version]) => {
                if plugin.is_some() {
                    return Err("the identity note names two plugins".into());
                }
                plugin = Some((api.clone(), name.clone(), version.clone()));
            }
            (BACKEND | OBSERVER, [name, description]) => {
                let k = KindNote {
                    name: name.clone(),
                    description: description.clone(),
                };
                if kind == BACKEND {
                    backends.push(k);
                } else {
                    observers.push(k);
                }
            }
            (PLUGIN | BACKEND | OBSERVER, _) => {
                return Err(format!(
                    "the identity note is corrupt (record of kind {kind} has {} fields)",
                    fields.len()
                ))
            }
            _ => {} // a record kind added later
        }
    }
    let (api_version, name, version) =
        plugin.ok_or("the identity note names no plugin (no export_plugin! record)")?;
    Ok(PluginNote {
        api_version,
        name,
        version,
        backends,
        observers,
    })
}

fn fields(mut body: &[u8]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let corrupt = || "the identity note is corrupt (a field runs past its record)".to_string();
        let len_bytes: [u8; 4] = body
            .get(..4)
            .ok_or_else(corrupt)?
            .try_into()
            .map_err(|_| corrupt())?;
        let len = u32::from_le_bytes(len_bytes) as usize;
        if len > MAX_FIELD_LEN {
            return Err(format!(
                "the identity note is corrupt (a field of {len} bytes; at most {MAX_FIELD_LEN})"
            ));
        }
        let bytes = body.get(4..4 + len).ok_or_else(corrupt)?;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| "the identity note is corrupt (a field is not UTF-8)".to_string())?;
        out.push(text.to_string());
        body = &body[4 + len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLUGIN_FIELDS: &[&str] = &["0.1.2", "demo", "1.0.0"];
    const PLUGIN_LEN: usize = record_len(PLUGIN_FIELDS);
    const PLUGIN_RECORD: [u8; PLUGIN_LEN] = record::<PLUGIN_LEN>(PLUGIN, PLUGIN_FIELDS);
    const BACKEND_FIELDS: &[&str] = &["demo", "runs demo jobs"];
    const BACKEND_LEN: usize = record_len(BACKEND_FIELDS);
    const BACKEND_RECORD: [u8; BACKEND_LEN] = record::<BACKEND_LEN>(BACKEND, BACKEND_FIELDS);

    fn section(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn run_time_records_equal_compile_time_ones() {
        assert_eq!(record_bytes(PLUGIN, PLUGIN_FIELDS), PLUGIN_RECORD);
    }

    #[test]
    fn records_round_trip_through_padding_and_unknown_kinds() {
        let unknown_kind = record::<{ record_len(&["x"]) }>(9, &["x"]);
        let mut newer_format = record::<{ record_len(&["y", "z"]) }>(BACKEND, &["y", "z"]);
        newer_format[4] = 2;
        let bytes = section(&[
            &BACKEND_RECORD,
            &[0, 0, 0],
            &unknown_kind,
            &PLUGIN_RECORD,
            &newer_format,
            &[0],
        ]);
        let note = decode(&bytes).unwrap();
        assert_eq!(
            (
                note.api_version.as_str(),
                note.name.as_str(),
                note.version.as_str()
            ),
            ("0.1.2", "demo", "1.0.0")
        );
        assert_eq!(
            note.backends,
            [KindNote {
                name: "demo".into(),
                description: "runs demo jobs".into()
            }]
        );
        assert!(note.observers.is_empty());
    }

    #[test]
    fn damaged_notes_are_one_line_errors() {
        let cut = &PLUGIN_RECORD[..PLUGIN_LEN - 2];
        let mut bad_magic = PLUGIN_RECORD;
        bad_magic[0] = b'X';
        let mut huge_field = PLUGIN_RECORD;
        huge_field[HEADER_LEN + 3] = 0x7f;
        for (bytes, what) in [
            (cut.to_vec(), "runs past the section"),
            (bad_magic.to_vec(), "bad record header"),
            (huge_field.to_vec(), "a field of"),
            (BACKEND_RECORD.to_vec(), "names no plugin"),
            (section(&[&PLUGIN_RECORD, &PLUGIN_RECORD]), "two plugins"),
            (Vec::new(), "names no plugin"),
        ] {
            let e = decode(&bytes).unwrap_err();
            assert!(e.contains(what), "{e}");
            assert!(!e.contains('\n'));
        }
    }
}
