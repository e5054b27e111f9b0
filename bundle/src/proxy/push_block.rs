//! Git smart-HTTP pushes are refused on every route: pushes go through the git gate, where
//! they are scanned for secrets.

/// How many rounds of percent-decoding are undone before matching.
const MAX_DECODE_ROUNDS: usize = 4;

const MARKER: &str = "git-receive-pack";

/// True when a request is any form of a smart-HTTP push: `git-receive-pack` in the path, in
/// the query (`info/refs?service=git-receive-pack`) or in the content type, in any case and
/// under any depth of percent-encoding.
pub(crate) fn is_git_push(path: &str, query: Option<&str>, content_type: Option<&str>) -> bool {
    [Some(path), query, content_type]
        .into_iter()
        .flatten()
        .any(|part| decoded_lower(part).contains(MARKER))
}

fn decoded_lower(text: &str) -> String {
    let mut current = text.to_ascii_lowercase();
    for _ in 0..MAX_DECODE_ROUNDS {
        let next = percent_decode(&current).to_ascii_lowercase();
        if next == current {
            break;
        }
        current = next;
    }
    current
}

/// Percent-decodes, also treating `+` as a space; invalid escapes stay as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_push_form_is_caught() {
        let pushes: [(&str, Option<&str>, Option<&str>); 8] = [
            ("/a/r.git/info/refs", Some("service=git-receive-pack"), None),
            ("/a/r.git/git-receive-pack", None, None),
            ("/a/r.git/GIT-Receive-Pack", None, None),
            ("/a/r.git/git%2Dreceive%2Dpack", None, None),
            ("/a/r.git/git%252Dreceive-pack", None, None),
            (
                "/a/r.git/info/refs",
                Some("service=git%2dreceive%2dpack"),
                None,
            ),
            (
                "/a/r.git/info/refs",
                Some("x=1&SERVICE=Git-Receive-Pack"),
                None,
            ),
            (
                "/a/r.git/x",
                None,
                Some("application/x-git-receive-pack-request"),
            ),
        ];
        for (path, query, ct) in pushes {
            assert!(is_git_push(path, query, ct), "{path} {query:?} {ct:?}");
        }
    }

    #[test]
    fn fetch_is_not_a_push() {
        assert!(!is_git_push(
            "/a/r.git/info/refs",
            Some("service=git-upload-pack"),
            None
        ));
        assert!(!is_git_push(
            "/a/r.git/git-upload-pack",
            None,
            Some("application/x-git-upload-pack-request")
        ));
    }
}
