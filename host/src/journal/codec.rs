//! The journal's byte-level encoding: LEB128 varints, zigzag integers, length-prefixed strings,
//! and frames (`len: u32 LE`, `crc32: u32 LE`, payload). Nothing here knows what a record
//! means; `record.rs` does.

/// The file starts with this, then a little-endian `u32` format version.
pub const MAGIC: &[u8; 8] = b"FLOWRUNJ";

/// The format version written after [`MAGIC`]. A reader refuses other versions. Version 2
/// writes times and job indices as distances from the ones before them in the frame.
pub const VERSION: u32 = 2;

/// Bytes of [`MAGIC`] plus the version.
pub const FILE_HEADER_LEN: usize = 12;

/// Bytes of a frame's header (length and checksum).
pub const FRAME_HEADER_LEN: usize = 8;

/// The largest frame a reader accepts: anything longer is taken for garbage, not a record (a
/// million-job flow's job table is about 40 MB).
pub const MAX_FRAME_LEN: usize = 1 << 30;

/// Appends encodings to a byte buffer.
pub trait Put {
    /// A LEB128 varint.
    fn put_u64(&mut self, v: u64);
    /// A zigzag varint.
    fn put_i64(&mut self, v: i64);
    /// A length-prefixed UTF-8 string.
    fn put_str(&mut self, s: &str);
    /// Raw bytes.
    fn put_bytes(&mut self, b: &[u8]);
    /// One byte.
    fn put_u8(&mut self, b: u8);
    /// An optional string: 0, or 1 then the string.
    fn put_opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.put_u8(0),
            Some(s) => {
                self.put_u8(1);
                self.put_str(s);
            }
        }
    }
    /// An optional float: 0, or 1 then its 8 bytes.
    fn put_opt_f64(&mut self, v: Option<f64>) {
        match v {
            None => self.put_u8(0),
            Some(v) => {
                self.put_u8(1);
                self.put_bytes(&v.to_le_bytes());
            }
        }
    }
}

impl Put for Vec<u8> {
    #[inline]
    fn put_u64(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.push(v as u8);
    }

    #[inline]
    fn put_i64(&mut self, v: i64) {
        self.put_u64(((v << 1) ^ (v >> 63)) as u64);
    }

    #[inline]
    fn put_str(&mut self, s: &str) {
        self.put_u64(s.len() as u64);
        self.extend_from_slice(s.as_bytes());
    }

    #[inline]
    fn put_bytes(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }

    #[inline]
    fn put_u8(&mut self, b: u8) {
        self.push(b);
    }
}

/// Why a payload could not be decoded. The reader treats it like a torn frame: the frame passed
/// its checksum, so this means a writer of another version or a bug, and what came before it
/// still counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// A cursor over a payload.
pub struct Get<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Get<'a> {
    /// Reads `bytes` from the start.
    pub fn new(bytes: &'a [u8]) -> Self {
        Get { bytes, pos: 0 }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    /// The next byte, left unread.
    pub fn peek(&self) -> Result<u8, Malformed> {
        self.bytes
            .get(self.pos)
            .copied()
            .ok_or(Malformed("truncated byte"))
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, Malformed> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or(Malformed("truncated byte"))?;
        self.pos += 1;
        Ok(b)
    }

    /// A LEB128 varint.
    pub fn u64(&mut self) -> Result<u64, Malformed> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            if shift >= 64 {
                return Err(Malformed("varint too long"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    /// A varint that must fit a `u32`.
    pub fn u32(&mut self) -> Result<u32, Malformed> {
        u32::try_from(self.u64()?).map_err(|_| Malformed("value too large"))
    }

    /// A zigzag varint.
    pub fn i64(&mut self) -> Result<i64, Malformed> {
        let u = self.u64()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(Malformed("truncated bytes"))?;
        let b = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    /// A fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self) -> Result<&'a str, Malformed> {
        let n = usize::try_from(self.u64()?).map_err(|_| Malformed("string too long"))?;
        std::str::from_utf8(self.bytes(n)?).map_err(|_| Malformed("string not UTF-8"))
    }

    /// An optional string.
    pub fn opt_str(&mut self) -> Result<Option<&'a str>, Malformed> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            _ => Err(Malformed("bad option tag")),
        }
    }

    /// An optional float.
    pub fn opt_f64(&mut self) -> Result<Option<f64>, Malformed> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(f64::from_le_bytes(self.array()?))),
            _ => Err(Malformed("bad option tag")),
        }
    }
}

/// Starts a frame in `buf`: reserves its header, to be filled by [`seal_frame`].
pub fn open_frame(buf: &mut Vec<u8>) {
    debug_assert!(buf.is_empty());
    buf.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
}

/// Whether the frame in `buf` holds no payload yet.
pub fn frame_is_empty(buf: &[u8]) -> bool {
    buf.len() <= FRAME_HEADER_LEN
}

/// Fills in the header of the frame in `buf` (opened by [`open_frame`]).
pub fn seal_frame(buf: &mut [u8]) {
    let payload = &buf[FRAME_HEADER_LEN..];
    let len = u32::try_from(payload.len()).expect("journal frames stay far below 4 GiB");
    let crc = crc32fast::hash(payload);
    buf[0..4].copy_from_slice(&len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// The end of a journal's readable part: where the frames stop and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// The file ends exactly after the last frame.
    Clean,
    /// The bytes from `at` on are not a whole, intact frame (the writer died mid-write, or the
    /// machine crashed and left zeros): they are ignored.
    Torn {
        /// Where the ignored bytes start.
        at: u64,
        /// How many bytes are ignored.
        bytes: u64,
    },
}

/// Splits a journal's bytes (from `body_offset` in the file, after the file header) into intact
/// frame payloads, each with the file offset where it ends. Stops at the first frame that is
/// short, too long, empty or fails its checksum.
pub fn frames(body: &[u8], body_offset: u64) -> (Vec<(&[u8], u64)>, Tail) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < body.len() {
        let torn = Tail::Torn {
            at: body_offset + pos as u64,
            bytes: (body.len() - pos) as u64,
        };
        let Some(header) = body.get(pos..pos + FRAME_HEADER_LEN) else {
            return (out, torn);
        };
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        // A zero length is never written: zeros are what a crashed machine leaves behind.
        if len == 0 || len > MAX_FRAME_LEN {
            return (out, torn);
        }
        let start = pos + FRAME_HEADER_LEN;
        let Some(payload) = body.get(start..start + len) else {
            return (out, torn);
        };
        if crc32fast::hash(payload) != crc {
            return (out, torn);
        }
        pos = start + len;
        out.push((payload, body_offset + pos as u64));
    }
    (out, Tail::Clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_zigzags_and_strings_round_trip() {
        let mut b = Vec::new();
        let us = [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX];
        let is = [0i64, -1, 1, -64, 64, i64::MIN, i64::MAX];
        for &u in &us {
            b.put_u64(u);
        }
        for &i in &is {
            b.put_i64(i);
        }
        b.put_str("héllo");
        b.put_opt_str(None);
        b.put_opt_str(Some(""));
        b.put_opt_f64(Some(1.5));
        let mut g = Get::new(&b);
        for &u in &us {
            assert_eq!(g.u64().unwrap(), u);
        }
        for &i in &is {
            assert_eq!(g.i64().unwrap(), i);
        }
        assert_eq!(g.str().unwrap(), "héllo");
        assert_eq!(g.opt_str().unwrap(), None);
        assert_eq!(g.opt_str().unwrap(), Some(""));
        assert_eq!(g.opt_f64().unwrap(), Some(1.5));
        assert!(g.is_empty());
        assert!(g.u8().is_err());
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        open_frame(&mut b);
        b.extend_from_slice(payload);
        seal_frame(&mut b);
        b
    }

    #[test]
    fn a_torn_or_corrupt_last_frame_is_detected_and_the_rest_kept() {
        let mut body = frame(b"one");
        body.extend(frame(b"two"));
        let whole = body.len() as u64;
        let (f, tail) = frames(&body, 12);
        let payloads: Vec<&[u8]> = f.iter().map(|x| x.0).collect();
        assert_eq!(payloads, [&b"one"[..], b"two"]);
        assert_eq!(f[1].1, 12 + whole);
        assert_eq!(tail, Tail::Clean);
        // Cut anywhere inside the second frame: only the first is kept.
        let first = frame(b"one").len();
        for cut in first + 1..body.len() {
            let (f, tail) = frames(&body[..cut], 12);
            assert_eq!(f.len(), 1, "cut at {cut}");
            assert_eq!(f[0].0, b"one");
            assert_eq!(
                tail,
                Tail::Torn {
                    at: 12 + first as u64,
                    bytes: (cut - first) as u64
                }
            );
        }
        // A flipped bit in the payload fails the checksum.
        let mut bad = body.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(frames(&bad, 0).0.len(), 1);
        // Zeros after the last frame (a machine crash) are a torn tail, not empty frames.
        let mut zeros = body.clone();
        zeros.extend([0u8; 4096]);
        let (f, tail) = frames(&zeros, 0);
        assert_eq!(f.len(), 2);
        assert_eq!(
            tail,
            Tail::Torn {
                at: whole,
                bytes: 4096
            }
        );
    }
}
