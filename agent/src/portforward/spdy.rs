//! SPDY/3.1 framing, the part of it that `kubectl port-forward` uses (the Go client is moby/spdystream): control
//! frames SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE, and DATA frames.
//! Header blocks are zlib streams primed with the SPDY/3 dictionary, one stream per direction for the whole
//! connection, each block ending with a sync flush.
//!
//! Written by hand: the only Rust SPDY/3.1 crate found (spdy-mux 0.1, 2026) is a client-side multiplexer tied to
//! one WebSocket library; the agent needs the server side over two transports, and the framing is small. Pure: no
//! I/O; [`Decoder`] parses from a byte buffer and [`Encoder`] appends to one.

use std::sync::OnceLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// RST_STREAM status codes (SPDY/3 §2.6.3) the agent sends.
pub const PROTOCOL_ERROR: u32 = 1;
pub const REFUSED_STREAM: u32 = 3;
pub const CANCEL: u32 = 5;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// Frame header: 8 bytes for control and data frames alike.
const HEADER_LEN: usize = 8;
/// Control frames are small; a bigger one is refused rather than buffered.
pub const MAX_CONTROL_LEN: usize = 64 * 1024;
/// A decompressed header block larger than this is refused (a zlib bomb in a tiny frame).
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Header names are lowercase on the wire; a name repeated or with several values joins them with NUL.
pub type Headers = Vec<(String, String)>;

/// The value of header `name` (case-insensitive, as Go canonicalizes names).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream { stream_id: u32, associated_to: u32, priority: u8, flags: u8, headers: Headers },
    SynReply { stream_id: u32, flags: u8, headers: Headers },
    RstStream { stream_id: u32, status: u32 },
    /// (flags, id, value) entries; nothing in port-forward depends on them.
    Settings { entries: Vec<(u8, u32, u32)> },
    Ping { id: u32 },
    GoAway { last_good_stream_id: u32, status: u32 },
    Headers { stream_id: u32, flags: u8, headers: Headers },
    WindowUpdate { stream_id: u32, delta: u32 },
    Data { stream_id: u32, flags: u8, data: Vec<u8> },
    /// A control frame of a type this framer does not know; SPDY/3 says to ignore it.
    Unknown { kind: u16 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("control frame of SPDY version {0}, not 3")]
    Version(u16),
    #[error("control frame of {len} bytes is larger than {MAX_CONTROL_LEN}")]
    TooLarge { len: usize },
    #[error("{kind} frame of {len} bytes is too short")]
    Short { kind: &'static str, len: usize },
    #[error("{0} frame on stream 0")]
    StreamZero(&'static str),
    #[error("decompressing a header block: {0}")]
    Inflate(String),
    #[error("compressing a header block: {0}")]
    Deflate(String),
    #[error("header block: {0}")]
    HeaderBlock(&'static str),
    #[error("header name {0:?} is not lowercase")]
    UppercaseName(String),
    #[error("data frame of {0} bytes is larger than a frame can say")]
    DataTooLarge(usize),
}

/// The SPDY/3 header compression dictionary (SPDY/3 §2.6.10.1): length-prefixed header names and values, then a
/// run of common text. 1423 bytes.
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding",
            "accept-language", "accept-ranges", "age", "allow", "authorization", "cache-control", "connection",
            "content-base", "content-encoding", "content-language", "content-length", "content-location",
            "content-md5", "content-range", "content-type", "date", "etag", "expect", "expires", "from", "host",
            "if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "last-modified",
            "location", "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer",
            "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via",
            "warning", "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url",
            "public", "set-cookie", "keep-alive", "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
            "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized",
            "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable",
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
            "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::with_capacity(1423);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Serializes a header block (before compression): count, then (length, name, length, value) pairs.
fn header_block(headers: &Headers) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (k, v) in headers {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k.to_ascii_lowercase().as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn parse_header_block(mut b: &[u8]) -> Result<Headers, FrameError> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], FrameError> {
        if b.len() < n {
            return Err(FrameError::HeaderBlock("truncated"));
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    let count = be32(take(&mut b, 4)?) as usize;
    // Each pair takes at least 8 bytes: a count beyond that is a lie, not a reason to allocate.
    if count > b.len() / 8 {
        return Err(FrameError::HeaderBlock("more pairs than bytes"));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let n = be32(take(&mut b, 4)?) as usize;
        let name = String::from_utf8(take(&mut b, n)?.to_vec()).map_err(|_| FrameError::HeaderBlock("name is not UTF-8"))?;
        if name.is_empty() {
            return Err(FrameError::HeaderBlock("empty header name"));
        }
        if name.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(FrameError::UppercaseName(name));
        }
        let n = be32(take(&mut b, 4)?) as usize;
        let value = String::from_utf8(take(&mut b, n)?.to_vec()).map_err(|_| FrameError::HeaderBlock("value is not UTF-8"))?;
        out.push((name, value));
    }
    if !b.is_empty() {
        return Err(FrameError::HeaderBlock("bytes after the last pair"));
    }
    Ok(out)
}

/// The writing half of a connection: owns the compression context of outgoing header blocks.
pub struct Encoder {
    deflate: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Encoder {
        let mut deflate = Compress::new(Compression::default(), true);
        // Infallible for a fresh stream; the dictionary only improves compression, and the peer's zlib reads
        // whether it was used from the stream header.
        let _ = deflate.set_dictionary(dictionary());
        Encoder { deflate }
    }

    fn compress(&mut self, raw: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(raw.len() + 64);
        let start = self.deflate.total_in();
        loop {
            let done = (self.deflate.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let status = self
                .deflate
                .compress_vec(&raw[done..], &mut out, FlushCompress::Sync)
                .map_err(|e| FrameError::Deflate(e.to_string()))?;
            let consumed = (self.deflate.total_in() - start) as usize == raw.len();
            // A sync flush is complete when the input is consumed and the output was not cut short.
            if consumed && out.len() < out.capacity() {
                return Ok(out);
            }
            if status == Status::StreamEnd {
                return Err(FrameError::Deflate("stream ended".into()));
            }
        }
    }

    /// Appends the wire form of `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let control = |out: &mut Vec<u8>, kind: u16, flags: u8, body: &[u8]| {
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.push(flags);
            out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(body);
        };
        match frame {
            Frame::SynStream { stream_id, associated_to, priority, flags, headers } => {
                let mut body = Vec::new();
                body.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                body.extend_from_slice(&(associated_to & 0x7fff_ffff).to_be_bytes());
                body.push((priority & 0x7) << 5);
                body.push(0);
                body.extend(self.compress(&header_block(headers))?);
                control(out, SYN_STREAM, *flags, &body);
            }
            Frame::SynReply { stream_id, flags, headers } | Frame::Headers { stream_id, flags, headers } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) { SYN_REPLY } else { HEADERS };
                let mut body = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend(self.compress(&header_block(headers))?);
                control(out, kind, *flags, &body);
            }
            Frame::RstStream { stream_id, status } => {
                let mut body = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(out, RST_STREAM, 0, &body);
            }
            Frame::Settings { entries } => {
                let mut body = (entries.len() as u32).to_be_bytes().to_vec();
                for (flags, id, value) in entries {
                    body.push(*flags);
                    body.extend_from_slice(&id.to_be_bytes()[1..]);
                    body.extend_from_slice(&value.to_be_bytes());
                }
                control(out, SETTINGS, 0, &body);
            }
            Frame::Ping { id } => control(out, PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last_good_stream_id, status } => {
                let mut body = (last_good_stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(out, GOAWAY, 0, &body);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut body = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
                control(out, WINDOW_UPDATE, 0, &body);
            }
            Frame::Data { stream_id, flags, data } => {
                if data.len() >= 1 << 24 {
                    return Err(FrameError::DataTooLarge(data.len()));
                }
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.push(*flags);
                out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                out.extend_from_slice(data);
            }
            Frame::Unknown { kind } => control(out, *kind, 0, &[]),
        }
        Ok(())
    }
}

/// The reading half of a connection: owns the decompression context of incoming header blocks.
pub struct Decoder {
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder { inflate: Decompress::new(true) }
    }

    fn decompress(&mut self, compressed: &[u8]) -> Result<Headers, FrameError> {
        let mut out = Vec::with_capacity(compressed.len() * 4 + 64);
        let start = self.inflate.total_in();
        loop {
            let done = (self.inflate.total_in() - start) as usize;
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(FrameError::HeaderBlock("larger than 64 KiB once decompressed"));
                }
                out.reserve(out.len());
            }
            let before = (self.inflate.total_in(), self.inflate.total_out());
            match self.inflate.decompress_vec(&compressed[done..], &mut out, FlushDecompress::Sync) {
                Ok(Status::StreamEnd) => return Err(FrameError::Inflate("the header stream ended".into())),
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(dictionary()).map_err(|e| FrameError::Inflate(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(FrameError::Inflate(e.to_string())),
            }
            let consumed = (self.inflate.total_in() - start) as usize == compressed.len();
            if consumed && out.len() < out.capacity() {
                break;
            }
            if (self.inflate.total_in(), self.inflate.total_out()) == before && out.len() < out.capacity() {
                return Err(FrameError::Inflate("no progress".into()));
            }
        }
        parse_header_block(&out)
    }

    /// Parses the first frame of `buf`: `Ok(None)` when `buf` does not hold a whole frame yet, else the frame and
    /// the number of bytes it took. Errors leave the connection unusable (the header compression state is shared).
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        let flags = buf[4];
        let control = buf[0] & 0x80 != 0;
        if control {
            let version = u16::from_be_bytes([buf[0] & 0x7f, buf[1]]);
            if version != VERSION {
                return Err(FrameError::Version(version));
            }
            if len > MAX_CONTROL_LEN {
                return Err(FrameError::TooLarge { len });
            }
        }
        if buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let body = &buf[HEADER_LEN..HEADER_LEN + len];
        let total = HEADER_LEN + len;
        if !control {
            let stream_id = be32(buf) & 0x7fff_ffff;
            if stream_id == 0 {
                return Err(FrameError::StreamZero("DATA"));
            }
            return Ok(Some((Frame::Data { stream_id, flags, data: body.to_vec() }, total)));
        }
        let kind = u16::from_be_bytes([buf[2], buf[3]]);
        let need = |name: &'static str, n: usize| if len < n { Err(FrameError::Short { kind: name, len }) } else { Ok(()) };
        let frame = match kind {
            SYN_STREAM => {
                need("SYN_STREAM", 10)?;
                let stream_id = be32(body) & 0x7fff_ffff;
                if stream_id == 0 {
                    return Err(FrameError::StreamZero("SYN_STREAM"));
                }
                let headers = self.decompress(&body[10..])?;
                Frame::SynStream { stream_id, associated_to: be32(&body[4..]) & 0x7fff_ffff, priority: body[8] >> 5, flags, headers }
            }
            SYN_REPLY | HEADERS => {
                need(if kind == SYN_REPLY { "SYN_REPLY" } else { "HEADERS" }, 4)?;
                let stream_id = be32(body) & 0x7fff_ffff;
                // Decompressed even when unused: the header compression context spans the connection.
                let headers = self.decompress(&body[4..])?;
                if kind == SYN_REPLY { Frame::SynReply { stream_id, flags, headers } } else { Frame::Headers { stream_id, flags, headers } }
            }
            RST_STREAM => {
                need("RST_STREAM", 8)?;
                Frame::RstStream { stream_id: be32(body) & 0x7fff_ffff, status: be32(&body[4..]) }
            }
            SETTINGS => {
                need("SETTINGS", 4)?;
                let n = be32(body) as usize;
                if len != 4 + n.saturating_mul(8) {
                    return Err(FrameError::Short { kind: "SETTINGS", len });
                }
                let entries = body[4..]
                    .chunks_exact(8)
                    .map(|e| (e[0], u32::from_be_bytes([0, e[1], e[2], e[3]]), be32(&e[4..])))
                    .collect();
                Frame::Settings { entries }
            }
            PING => {
                need("PING", 4)?;
                Frame::Ping { id: be32(body) }
            }
            GOAWAY => {
                need("GOAWAY", 4)?;
                let status = if len >= 8 { be32(&body[4..]) } else { 0 };
                Frame::GoAway { last_good_stream_id: be32(body) & 0x7fff_ffff, status }
            }
            WINDOW_UPDATE => {
                need("WINDOW_UPDATE", 8)?;
                Frame::WindowUpdate { stream_id: be32(body) & 0x7fff_ffff, delta: be32(&body[4..]) & 0x7fff_ffff }
            }
            other => Frame::Unknown { kind: other },
        };
        Ok(Some((frame, total)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn round_trip(frames: &[Frame]) -> Vec<Frame> {
        let mut enc = Encoder::new();
        let mut wire = vec![];
        for f in frames {
            enc.encode(f, &mut wire).unwrap();
        }
        let mut dec = Decoder::new();
        let mut out = vec![];
        let mut at = 0;
        while let Some((f, n)) = dec.decode(&wire[at..]).unwrap() {
            out.push(f);
            at += n;
        }
        assert_eq!(at, wire.len(), "every byte is a frame");
        out
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // Its Adler-32, as the zlib stream header of a SPDY/3 header block names it.
        let mut c = Compress::new(Compression::default(), true);
        assert_eq!(c.set_dictionary(d).unwrap(), 0xe3c6_a7c2);
    }

    #[test]
    fn every_frame_round_trips() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: h(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::SynReply { stream_id: 1, flags: 0, headers: vec![] },
            Frame::SynStream { stream_id: 3, associated_to: 0, priority: 7, flags: FLAG_FIN, headers: h(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]) },
            Frame::Data { stream_id: 3, flags: 0, data: b"GET / HTTP/1.0\r\n\r\n".to_vec() },
            Frame::Data { stream_id: 3, flags: FLAG_FIN, data: vec![] },
            Frame::Headers { stream_id: 3, flags: 0, headers: h(&[("x", "a\0b")]) },
            Frame::RstStream { stream_id: 3, status: CANCEL },
            Frame::Settings { entries: vec![(1, 4, 100), (0, 7, 65536)] },
            Frame::Ping { id: 1 },
            Frame::GoAway { last_good_stream_id: 3, status: 0 },
            Frame::WindowUpdate { stream_id: 3, delta: 65536 },
        ];
        assert_eq!(round_trip(&frames), frames);
    }

    #[test]
    fn header_blocks_share_one_compression_context() {
        // The second block repeats the first: with a shared context it compresses to far fewer bytes, and a decoder
        // that (wrongly) started over for each block could not read it.
        let headers = h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "12345")]);
        let mut enc = Encoder::new();
        let (mut a, mut b) = (vec![], vec![]);
        enc.encode(&Frame::SynStream { stream_id: 1, associated_to: 0, priority: 0, flags: 0, headers: headers.clone() }, &mut a).unwrap();
        enc.encode(&Frame::SynStream { stream_id: 3, associated_to: 0, priority: 0, flags: 0, headers: headers.clone() }, &mut b).unwrap();
        assert!(b.len() < a.len(), "{} < {}", b.len(), a.len());
        let mut fresh = Decoder::new();
        assert!(fresh.decode(&b).is_err(), "the second block alone is not a zlib stream");
        let mut dec = Decoder::new();
        let (f1, _) = dec.decode(&a).unwrap().unwrap();
        let (f2, _) = dec.decode(&b).unwrap().unwrap();
        assert!(matches!(f1, Frame::SynStream { stream_id: 1, ref headers, .. } if header(headers, "PORT") == Some("8080")));
        assert!(matches!(f2, Frame::SynStream { stream_id: 3, ref headers, .. } if header(headers, "streamType") == Some("data")));
    }

    #[test]
    fn reads_a_block_compressed_with_the_dictionary_by_another_zlib() {
        // As Go's compress/zlib writes it: zlib header naming the dictionary, best compression, sync flush.
        let raw = header_block(&h(&[("streamtype", "error"), ("port", "80"), ("requestid", "7")]));
        let mut c = Compress::new(Compression::best(), true);
        c.set_dictionary(dictionary()).unwrap();
        let mut block = Vec::with_capacity(256);
        c.compress_vec(&raw, &mut block, FlushCompress::Sync).unwrap();
        assert_eq!(block[1] & 0x20, 0x20, "FDICT is set");
        let mut body = 1u32.to_be_bytes().to_vec();
        body.extend([0, 0, 0, 0, 0, 0]);
        body.extend(&block);
        let mut wire = vec![0x80, 3, 0, 1, 0];
        wire.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        wire.extend(body);
        let (f, n) = Decoder::new().decode(&wire).unwrap().unwrap();
        assert_eq!(n, wire.len());
        assert!(matches!(f, Frame::SynStream { ref headers, .. } if header(headers, "requestID") == Some("7")));
    }

    #[test]
    fn partial_input_waits_for_more() {
        let mut enc = Encoder::new();
        let mut wire = vec![];
        enc.encode(&Frame::Ping { id: 9 }, &mut wire).unwrap();
        let mut dec = Decoder::new();
        for cut in 0..wire.len() {
            assert_eq!(dec.decode(&wire[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(dec.decode(&wire).unwrap(), Some((Frame::Ping { id: 9 }, 12)));
    }

    #[test]
    fn malformed_frames_are_errors() {
        let mut dec = Decoder::new();
        // Version 2.
        assert_eq!(dec.decode(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]), Err(FrameError::Version(2)));
        // A PING too short for its id.
        assert!(matches!(Decoder::new().decode(&[0x80, 3, 0, 6, 0, 0, 0, 2, 0, 1]), Err(FrameError::Short { .. })));
        // A control frame claiming 16 MiB.
        assert!(matches!(Decoder::new().decode(&[0x80, 3, 0, 1, 0, 0xff, 0xff, 0xff]), Err(FrameError::TooLarge { .. })));
        // Data on stream 0.
        assert_eq!(Decoder::new().decode(&[0, 0, 0, 0, 0, 0, 0, 1, 42]), Err(FrameError::StreamZero("DATA")));
        // A SYN_STREAM whose header block is not zlib.
        let mut wire = vec![0x80, 3, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        wire.extend(b"junk");
        assert!(matches!(Decoder::new().decode(&wire), Err(FrameError::Inflate(_))));
        // SETTINGS whose count does not match its length.
        assert!(matches!(Decoder::new().decode(&[0x80, 3, 0, 4, 0, 0, 0, 4, 0, 0, 0, 9]), Err(FrameError::Short { .. })));
    }

    #[test]
    fn malformed_header_blocks_are_errors() {
        let block = |raw: &[u8]| {
            let mut enc = Encoder::new();
            let compressed = enc.compress(raw).unwrap();
            let mut body = 5u32.to_be_bytes().to_vec();
            body.extend(compressed);
            let mut wire = vec![0x80, 3, 0, 2, 0];
            wire.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            wire.extend(body);
            Decoder::new().decode(&wire)
        };
        // Claims a billion pairs.
        assert!(matches!(block(&[0x40, 0, 0, 0, 0, 0, 0, 0]), Err(FrameError::HeaderBlock(_))));
        // A name longer than the block.
        assert!(matches!(block(&[0, 0, 0, 1, 0, 0, 0, 200, b'a']), Err(FrameError::HeaderBlock(_))));
        // An uppercase name.
        let mut raw = header_block(&h(&[("ok", "1")]));
        raw[8] = b'O';
        assert!(matches!(block(&raw), Err(FrameError::UppercaseName(_))));
        // Garbage after the pairs.
        let mut raw = header_block(&h(&[("a", "1")]));
        raw.push(0);
        assert!(matches!(block(&raw), Err(FrameError::HeaderBlock(_))));
        // A zlib bomb: a megabyte of zeros compresses to a kilobyte.
        let bomb = vec![0u8; 1 << 20];
        assert!(matches!(block(&bomb), Err(FrameError::HeaderBlock(_))));
    }

    #[test]
    fn unknown_control_frames_are_skipped() {
        let wire = [0x80, 3, 0, 10, 0, 0, 0, 2, 1, 2, 0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 5];
        let mut dec = Decoder::new();
        assert_eq!(dec.decode(&wire).unwrap(), Some((Frame::Unknown { kind: 10 }, 10)));
        assert_eq!(dec.decode(&wire[10..]).unwrap(), Some((Frame::Ping { id: 5 }, 12)));
    }
}
