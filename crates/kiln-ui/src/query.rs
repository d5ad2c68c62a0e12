//! Query strings with repeated keys (`?id=a&id=b`, `?col=x&col=y`), which serde's
//! urlencoded form cannot read into lists.

/// The decoded `key=value` pairs of a query string, in order (`+` is a space, `%XX` a byte;
/// malformed escapes are kept as written).
pub fn pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Every value of `key`.
pub fn all(query: &str, key: &str) -> Vec<String> {
    pairs(query).into_iter().filter(|(k, _)| k == key).map(|(_, v)| v).collect()
}

/// The first value of `key`.
pub fn first(query: &str, key: &str) -> Option<String> {
    pairs(query).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_and_escapes() {
        let q = "id=a&id=b&q=lr%3D0.01+x&bad=%zz&empty";
        assert_eq!(all(q, "id"), ["a", "b"]);
        assert_eq!(first(q, "q").as_deref(), Some("lr=0.01 x"));
        assert_eq!(first(q, "bad").as_deref(), Some("%zz"));
        assert_eq!(first(q, "empty").as_deref(), Some(""));
        assert_eq!(first("a=%4", "a").as_deref(), Some("%4"));
    }
}
