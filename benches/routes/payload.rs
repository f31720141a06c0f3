//! The messages every route carries: a JSON order padded to an exact size,
//! so that `order:{order_id}` templates work and the size is what it says.

/// Order `id` as JSON of exactly `size` bytes (or the shortest form, if
/// `size` is smaller). The padding is pseudo-random text: compression, where
/// a client enables it, gains about what it would on real data.
pub fn payload(id: u64, size: usize) -> Vec<u8> {
    let head = format!(
        r#"{{"order_id":{id},"customer_id":{},"amount":{}.{:02},"status":"new","pad":""#,
        id % 9973,
        id % 500,
        id % 100
    );
    let tail = "\"}";
    let pad = size.saturating_sub(head.len() + tail.len());
    let mut out = Vec::with_capacity(head.len() + pad + tail.len());
    out.extend_from_slice(head.as_bytes());
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    for _ in 0..pad {
        // xorshift64: cheap, and different for every order.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(CHARS[(x % CHARS.len() as u64) as usize]);
    }
    out.extend_from_slice(tail.as_bytes());
    out
}

/// The `order_id` of a payload written by [`payload`], wherever it sits in
/// the bytes (a sink may wrap the payload in an envelope).
pub fn order_id(bytes: &[u8]) -> Option<u64> {
    const FIELD: &[u8] = b"\"order_id\":";
    let at = bytes.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
    let digits = bytes[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&bytes[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// The id in a key such as `order:42` (the Redis SET sink's keys).
pub fn key_id(key: &str) -> Option<u64> {
    key.rsplit(':').next()?.parse().ok()
}

/// Checks, before a run, that payloads have their size and give their id
/// back (a wrong size would make every figure lie).
pub fn self_check() -> crate::R<()> {
    for size in [100, 1024, 10240] {
        let p = payload(123_456, size);
        let json: Result<serde_json::Value, _> = serde_json::from_slice(&p);
        if p.len() != size || order_id(&p) != Some(123_456) || json.is_err() {
            return Err(format!(
                "payload of {size} B is wrong: {}",
                String::from_utf8_lossy(&p)
            )
            .into());
        }
    }
    if key_id("order:77") != Some(77) {
        return Err("key_id is wrong".into());
    }
    Ok(())
}
