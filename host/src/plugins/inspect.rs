//! What a plugin library is, read from the file without loading it: the ELF headers are
//! checked against the file's size (a truncated library mapped by `dlopen` dies of SIGBUS), and
//! the identity note the SDK's export macros write (`flowrun_plugin_sdk::identity`) is decoded.
//! Nothing of the library runs.

use std::{fs::File, path::Path};

use flowrun_plugin_sdk::identity::{self, PluginNote};
use object::{
    elf,
    read::elf::{FileHeader, ProgramHeader, SectionHeader},
    Endianness, ReadCache,
};

/// What reading a library file says.
#[derive(Debug, Clone)]
pub enum FileIdentity {
    /// A sound shared library with an identity note.
    Note(PluginNote),
    /// A sound shared library without a note: a plugin built before notes existed, or not a
    /// flowrun plugin at all. Only a child process that loads it can tell.
    NoNote,
    /// Not something `dlopen` can safely be given: why, in one line.
    Broken(String),
}

/// Reads `path`'s ELF headers and identity note.
pub fn inspect(path: &Path) -> FileIdentity {
    match read(path) {
        Ok(Some(note)) => FileIdentity::Note(note),
        Ok(None) => FileIdentity::NoNote,
        Err(why) => FileIdentity::Broken(why),
    }
}

fn read(path: &Path) -> Result<Option<PluginNote>, String> {
    let file = File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read it: {e}"))?;
    if meta.is_dir() {
        return Err("it is a directory, not a shared library".into());
    }
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    let len = meta.len();
    // Reads only the ranges asked for: the headers and the note, not the whole library.
    let data = ReadCache::new(file);
    let not_elf = |e: object::Error| format!("not an ELF shared library ({e})");
    let header = elf::FileHeader64::<Endianness>::parse(&data).map_err(not_elf)?;
    let endian = header.endian().map_err(not_elf)?;
    if header.e_type(endian) != elf::ET_DYN {
        return Err(format!(
            "not a shared library (ELF type {})",
            header.e_type(endian)
        ));
    }
    let segments = header
        .program_headers(endian, &data)
        .map_err(|e| format!("corrupt ELF program headers ({e}): the file is damaged"))?;
    for segment in segments {
        if segment.p_type(endian) != elf::PT_LOAD {
            continue;
        }
        let end = segment
            .p_offset(endian)
            .checked_add(segment.p_filesz(endian));
        if end.is_none_or(|end| end > len) {
            return Err(format!(
                "truncated: a loadable segment ends past the end of the file ({len} bytes)"
            ));
        }
    }
    let sections = header
        .sections(endian, &data)
        .map_err(|e| format!("corrupt ELF section headers ({e}): the file is damaged"))?;
    let Some((_, section)) = sections.section_by_name(endian, identity::SECTION.as_bytes()) else {
        return Ok(None);
    };
    let bytes = section
        .data(endian, &data)
        .map_err(|e| format!("unreadable identity note ({e})"))?;
    identity::decode(bytes).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_a_sound_shared_library_is_broken_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &[u8], &str); 3] = [
            ("empty", b"", "not an ELF shared library"),
            (
                "text",
                b"hello, this is not a library\n",
                "not an ELF shared library",
            ),
            ("magic", b"\x7fELF", "not an ELF shared library"),
        ];
        for (name, bytes, expected) in cases {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            match inspect(&p) {
                FileIdentity::Broken(why) => {
                    assert!(why.contains(expected), "{name}: {why}");
                    assert!(!why.contains('\n'));
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        match inspect(dir.path()) {
            FileIdentity::Broken(why) => assert!(why.contains("directory"), "{why}"),
            other => panic!("{other:?}"),
        }
        match inspect(&dir.path().join("missing")) {
            FileIdentity::Broken(why) => assert!(why.contains("No such file"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_test_binary_itself_is_not_a_shared_library() {
        // A position-independent executable is ET_DYN too; what matters is that a real ELF file
        // is read without loading it and without a note.
        let exe = std::env::current_exe().unwrap();
        match inspect(&exe) {
            FileIdentity::NoNote => {}
            FileIdentity::Broken(why) => assert!(why.contains("not a shared library"), "{why}"),
            FileIdentity::Note(n) => panic!("{n:?}"),
        }
    }
}
