//! The few Kafka wire formats the SASL gate speaks itself: request headers,
//! SaslHandshake (api key 17, v0-1, never flexible), SaslAuthenticate (36,
//! v0-1 classic, v2 flexible) and the ApiVersions (18) response it rewrites.
//! Field layouts as in Apache Kafka's message definitions (the JSON files
//! tansu-sans-io is generated from): classic strings have an i16 length,
//! bytes an i32 length; flexible ("compact") ones an unsigned varint of
//! length + 1, and every flexible structure ends in tagged fields.
//!
//! Frames here are without their 4-byte size; [`frame`] adds it.

/// The API keys the gate looks at.
pub const SASL_HANDSHAKE: i16 = 17;
pub const API_VERSIONS: i16 = 18;
pub const SASL_AUTHENTICATE: i16 = 36;

/// Error codes the gate answers with.
pub const NONE: i16 = 0;
pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
pub const ILLEGAL_SASL_STATE: i16 = 34;
pub const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// The versions the gate implements, offered in place of the broker's.
pub const HANDSHAKE_VERSIONS: (i16, i16) = (1, 1);
pub const AUTHENTICATE_VERSIONS: (i16, i16) = (0, 2);

/// Reads a frame front to back; every read is `None` past its end.
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.bytes.get(..n)?, self.bytes.get(n..)?);
        self.bytes = rest;
        Some(head)
    }

    pub fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    pub fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    pub fn uvarint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// A classic (nullable) string: i16 length, -1 for null.
    pub fn string(&mut self) -> Option<Option<&'a [u8]>> {
        let len = self.i16()?;
        if len < 0 {
            return Some(None);
        }
        self.take(len as usize).map(Some)
    }

    /// Classic bytes (i32 length) or compact bytes (varint length + 1).
    pub fn bytes(&mut self, flexible: bool) -> Option<&'a [u8]> {
        let len = if flexible {
            (self.uvarint()? as usize).checked_sub(1)?
        } else {
            usize::try_from(self.i32()?).ok()?
        };
        self.take(len)
    }

    /// Tagged fields: a count, then (tag, size, bytes) each.
    pub fn skip_tags(&mut self) -> Option<()> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let size = self.uvarint()? as usize;
            self.take(size)?;
        }
        Some(())
    }
}

/// Whether requests and responses of this API and version are flexible.
pub fn flexible(api_key: i16, version: i16) -> bool {
    match api_key {
        SASL_AUTHENTICATE => version >= 2,
        API_VERSIONS => version >= 3,
        _ => false,
    }
}

#[derive(Clone, Copy, Debug)]
pub struct RequestHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// The header of a request and the body after it: api key, version,
/// correlation id, client id (a classic nullable string even in header
/// v2), and tagged fields when the request is flexible.
pub fn request(frame: &[u8]) -> Option<(RequestHeader, &[u8])> {
    let mut r = Reader::new(frame);
    let header = RequestHeader {
        api_key: r.i16()?,
        api_version: r.i16()?,
        correlation_id: r.i32()?,
    };
    r.string()?;
    if flexible(header.api_key, header.api_version) {
        r.skip_tags()?;
    }
    Some((header, r.rest()))
}

/// The size-prefixed frame of `body`.
pub fn frame(body: Vec<u8>) -> Vec<u8> {
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// SaslHandshake's mechanism (v0 and v1 alike).
pub fn handshake_mechanism(body: &[u8]) -> Option<String> {
    let name = Reader::new(body).string()??;
    Some(String::from_utf8_lossy(name).into_owned())
}

/// A SaslHandshake response (header v0: the correlation id only).
pub fn handshake_response(correlation_id: i32, error: i16, mechanisms: &[&str]) -> Vec<u8> {
    let mut out = correlation_id.to_be_bytes().to_vec();
    out.extend(error.to_be_bytes());
    out.extend((mechanisms.len() as i32).to_be_bytes());
    for m in mechanisms {
        out.extend((m.len() as i16).to_be_bytes());
        out.extend(m.as_bytes());
    }
    out
}

/// SaslAuthenticate's auth bytes.
pub fn authenticate_bytes(version: i16, body: &[u8]) -> Option<Vec<u8>> {
    Reader::new(body)
        .bytes(flexible(SASL_AUTHENTICATE, version))
        .map(<[u8]>::to_vec)
}

/// A SaslAuthenticate response: error code, nullable error message, auth
/// bytes, and from v1 the session lifetime (0: no re-authentication).
/// v2 is flexible: response header v1 (tagged fields after the
/// correlation id), compact string and bytes, tagged fields at the end.
pub fn authenticate_response(
    correlation_id: i32,
    version: i16,
    error: i16,
    message: Option<&str>,
    auth_bytes: &[u8],
) -> Vec<u8> {
    let flex = flexible(SASL_AUTHENTICATE, version);
    let mut out = correlation_id.to_be_bytes().to_vec();
    if flex {
        out.push(0);
    }
    out.extend(error.to_be_bytes());
    match (message, flex) {
        (None, false) => out.extend((-1i16).to_be_bytes()),
        (None, true) => out.push(0),
        (Some(m), false) => {
            out.extend((m.len() as i16).to_be_bytes());
            out.extend(m.as_bytes());
        }
        (Some(m), true) => {
            put_uvarint(&mut out, m.len() as u64 + 1);
            out.extend(m.as_bytes());
        }
    }
    if flex {
        put_uvarint(&mut out, auth_bytes.len() as u64 + 1);
    } else {
        out.extend((auth_bytes.len() as i32).to_be_bytes());
    }
    out.extend(auth_bytes);
    if version >= 1 {
        out.extend(0i64.to_be_bytes());
    }
    if flex {
        out.push(0);
    }
    out
}

/// An ApiVersions response with the broker's entries for SaslHandshake and
/// SaslAuthenticate replaced by the versions the gate implements (added if
/// the broker had none). `None` if the response does not parse or is an
/// error (left as it is). ApiVersions responses always have header v0,
/// even when the body is flexible (v3+).
pub fn offer_gate_versions(version: i16, response: &[u8]) -> Option<Vec<u8>> {
    let flex = flexible(API_VERSIONS, version);
    let mut r = Reader::new(response);
    let correlation_id = r.i32()?;
    let error = r.i16()?;
    if error != NONE {
        return None;
    }
    let count = if flex {
        (r.uvarint()? as usize).checked_sub(1)?
    } else {
        usize::try_from(r.i32()?).ok()?
    };
    let mut entries: Vec<Vec<u8>> = Vec::with_capacity(count + 2);
    for _ in 0..count {
        let start = r.rest();
        let key = r.i16()?;
        r.take(4)?;
        if flex {
            r.skip_tags()?;
        }
        let len = start.len() - r.rest().len();
        if key != SASL_HANDSHAKE && key != SASL_AUTHENTICATE {
            entries.push(start[..len].to_vec());
        }
    }
    for (key, (min, max)) in [
        (SASL_HANDSHAKE, HANDSHAKE_VERSIONS),
        (SASL_AUTHENTICATE, AUTHENTICATE_VERSIONS),
    ] {
        let mut e = Vec::new();
        for v in [key, min, max] {
            e.extend(v.to_be_bytes());
        }
        if flex {
            e.push(0);
        }
        entries.push(e);
    }
    let mut out = correlation_id.to_be_bytes().to_vec();
    out.extend(error.to_be_bytes());
    if flex {
        put_uvarint(&mut out, entries.len() as u64 + 1);
    } else {
        out.extend((entries.len() as i32).to_be_bytes());
    }
    for e in entries {
        out.extend(e);
    }
    // throttle_time_ms (v1+) and the top-level tagged fields, unchanged.
    out.extend(r.rest());
    Some(out)
}
