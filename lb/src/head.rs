//! The rules a request head must pass before lb forwards it, on either request path: nginx's
//! limits on the size of a head, and nginx's refusals of requests that two parsers could read
//! two ways (request smuggling). Every HTTP/1.x head is first parsed in `fast.rs`, which applies
//! these rules before it decides which path serves the request; `proxy.rs` applies them to the
//! HTTP/2 requests pingora reads itself. Pure: no IO, no clock, no pingora, no routing.
//!
//! The answers are the ones nginx 1.22 gives with its default settings (the README lists what
//! the real one sent for each case): the same status line, and a body whose first line is the
//! title of nginx's error page.

/// nginx's `client_header_buffer_size 1k`: a head that fits in this buffer is never too large.
const FIRST_BUFFER: usize = 1024;
/// nginx's `large_client_header_buffers 4 8k`: each line must fit whole in one 8k buffer, and
/// the lines that do not fit in the first buffer must fit in four of them.
pub const LINE_MAX: usize = 8192;
const LARGE_BUFFERS: usize = 4;
/// pingora reads at most this many header lines; nginx has no such limit, but a head handed to
/// pingora with more would be refused there.
pub const MAX_HEADERS: usize = 256;

/// Why a request is refused. The connection is closed after the answer, as nginx does, so no
/// byte that follows is read as a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request line does not fit in one large buffer.
    UriTooLarge,
    /// A header line does not fit in one large buffer, or the head does not fit in four.
    HeaderTooLarge,
    /// Not an HTTP/1.x head as httparse reads it (the error's name).
    Malformed(&'static str),
    TooManyHeaders,
    /// Neither `/path` nor `scheme://...` (`*`, or a CONNECT authority).
    BadTarget,
    /// A header nginx takes once (Host, Content-Length, Transfer-Encoding, Authorization,
    /// Expect, the `If-*` conditions) came twice.
    Duplicate(&'static str),
    NoHost,
    BadHost,
    BadLength,
    ChunkedHttp10,
    LengthAndChunked,
    /// A `Transfer-Encoding` other than `chunked` alone.
    UnknownCoding,
}

impl Refusal {
    /// The status code and nginx's reason phrase for it.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Refusal::UriTooLarge => (414, "Request-URI Too Large"),
            Refusal::UnknownCoding => (501, "Not Implemented"),
            _ => (400, "Bad Request"),
        }
    }

    /// The title of nginx's error page for this refusal.
    pub fn title(self) -> &'static str {
        match self {
            Refusal::UriTooLarge => "414 Request-URI Too Large",
            Refusal::HeaderTooLarge => "400 Request Header Or Cookie Too Large",
            Refusal::UnknownCoding => "501 Not Implemented",
            _ => "400 Bad Request",
        }
    }

    /// What was wrong, for the body and the log.
    pub fn why(self) -> String {
        match self {
            Refusal::UriTooLarge => format!("the request line is longer than {LINE_MAX} bytes"),
            Refusal::HeaderTooLarge => format!(
                "a header line is longer than {LINE_MAX} bytes, or the head does not fit in \
                 {LARGE_BUFFERS} buffers of {LINE_MAX}"
            ),
            Refusal::Malformed(e) => format!("malformed request head ({e})"),
            Refusal::TooManyHeaders => format!("more than {MAX_HEADERS} header lines"),
            Refusal::BadTarget => "the request target is neither /path nor scheme://host/path".into(),
            Refusal::Duplicate(name) => format!("two {name} headers"),
            Refusal::NoHost => "an HTTP/1.1 request without a Host header".into(),
            Refusal::BadHost => "an invalid Host header".into(),
            Refusal::BadLength => "an invalid Content-Length".into(),
            Refusal::ChunkedHttp10 => "an HTTP/1.0 request with Transfer-Encoding".into(),
            Refusal::LengthAndChunked => "both Content-Length and Transfer-Encoding".into(),
            Refusal::UnknownCoding => "a Transfer-Encoding other than chunked".into(),
        }
    }

    /// The whole answer, and how many body bytes it holds: nginx's status line and
    /// `Connection: close`, and a plain-text body whose first line is nginx's page title.
    pub fn page(self, head_request: bool) -> (Vec<u8>, usize) {
        let (code, reason) = self.status();
        let body = format!("{}\nlb: {}\n", self.title(), self.why());
        let mut page = format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        if head_request {
            return (page, 0);
        }
        page.extend_from_slice(body.as_bytes());
        (page, body.len())
    }
}

/// Checks a head's size the way nginx fills its buffers: a line goes whole into what is left
/// of the current buffer, or starts the next one. `complete`: `head` ends with the head's empty
/// line; otherwise its last line may still be arriving, and is refused as soon as it can no
/// longer fit (nginx refuses when a buffer fills, before the head is complete). A pipelined
/// request is measured as if it were the first on its connection, where nginx would continue
/// in the buffer the previous request left.
pub fn check_size(head: &[u8], complete: bool) -> Result<(), Refusal> {
    if head.len() <= FIRST_BUFFER {
        return Ok(());
    }
    let mut room = FIRST_BUFFER;
    let mut large = 0;
    let mut request_line = true;
    let mut rest = head;
    while !rest.is_empty() {
        let (len, whole) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (rest.len(), complete),
        };
        // A line still arriving needs at least one more byte: nginx moves it on when it fills
        // the buffer, even if its end would have fitted.
        let need = if whole { len } else { len + 1 };
        if need > room {
            if need > LINE_MAX {
                return Err(if request_line { Refusal::UriTooLarge } else { Refusal::HeaderTooLarge });
            }
            if large == LARGE_BUFFERS {
                return Err(Refusal::HeaderTooLarge);
            }
            large += 1;
            room = LINE_MAX;
        }
        room -= len.min(room);
        // Empty lines before the request line are skipped, as by httparse and nginx.
        let empty = rest[..len].iter().all(|b| *b == b'\r' || *b == b'\n');
        request_line &= empty;
        rest = &rest[len..];
    }
    Ok(())
}

/// A request target nginx takes: origin form (`/path`) or absolute form (`scheme://...`).
pub fn check_target(target: &str) -> Result<(), Refusal> {
    if target.starts_with('/') {
        return Ok(());
    }
    let scheme_len = target.bytes().take_while(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b)).count();
    match target.as_bytes().first() {
        Some(b) if b.is_ascii_alphabetic() && target[scheme_len..].starts_with("://") => Ok(()),
        _ => Err(Refusal::BadTarget),
    }
}

/// The header fields lb reads, told apart by name. Those nginx takes once come first, up to
/// `IfRange`, so that each has a bit in `Rules::seen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Field {
    Host,
    ContentLength,
    TransferEncoding,
    Expect,
    Authorization,
    IfModifiedSince,
    IfUnmodifiedSince,
    IfMatch,
    IfNoneMatch,
    IfRange,
    Connection,
    Upgrade,
    KeepAlive,
    ProxyConnection,
    Te,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    Other,
}

/// The field a header name names. By length first: this runs on every header line of every
/// request, and most names match no length here or only one candidate.
#[inline]
pub fn field(name: &str) -> Field {
    let is = |lower: &str| name.eq_ignore_ascii_case(lower);
    match name.len() {
        2 if is("te") => Field::Te,
        4 if is("host") => Field::Host,
        6 if is("expect") => Field::Expect,
        7 if is("upgrade") => Field::Upgrade,
        8 if is("if-match") => Field::IfMatch,
        8 if is("if-range") => Field::IfRange,
        10 if is("connection") => Field::Connection,
        10 if is("keep-alive") => Field::KeepAlive,
        13 if is("authorization") => Field::Authorization,
        13 if is("if-none-match") => Field::IfNoneMatch,
        14 if is("content-length") => Field::ContentLength,
        15 if is("x-forwarded-for") => Field::XForwardedFor,
        16 if is("proxy-connection") => Field::ProxyConnection,
        16 if is("x-forwarded-host") => Field::XForwardedHost,
        17 if is("transfer-encoding") => Field::TransferEncoding,
        17 if is("if-modified-since") => Field::IfModifiedSince,
        17 if is("x-forwarded-proto") => Field::XForwardedProto,
        19 if is("if-unmodified-since") => Field::IfUnmodifiedSince,
        _ => Field::Other,
    }
}

/// The name of a field nginx takes once, for the refusal.
#[cold]
fn unique_name(f: Field) -> &'static str {
    match f {
        Field::Host => "Host",
        Field::ContentLength => "Content-Length",
        Field::TransferEncoding => "Transfer-Encoding",
        Field::Expect => "Expect",
        Field::Authorization => "Authorization",
        Field::IfModifiedSince => "If-Modified-Since",
        Field::IfUnmodifiedSince => "If-Unmodified-Since",
        Field::IfMatch => "If-Match",
        Field::IfNoneMatch => "If-None-Match",
        Field::IfRange => "If-Range",
        _ => "?",
    }
}

/// How the request body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Body {
    #[default]
    None,
    Length(u64),
    Chunked,
}

/// The version of the request, for the rules that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
    /// HTTP/2: the authority may come as `:authority`, and the h2 layer frames the body.
    H2,
}

/// The header rules, fed one header line at a time in the order they came.
#[derive(Debug, Default)]
pub struct Rules<'a> {
    seen: u16,
    host: Option<&'a [u8]>,
    length: Option<&'a [u8]>,
    coding: Option<&'a [u8]>,
}

impl<'a> Rules<'a> {
    /// Takes one header line and says which field it is. A second line of a field nginx takes
    /// once, or an invalid Host, is refused here, as nginx refuses it when it reads the line.
    #[inline]
    pub fn see(&mut self, name: &str, value: &'a [u8]) -> Result<Field, Refusal> {
        let f = field(name);
        if f as u8 > Field::IfRange as u8 {
            return Ok(f);
        }
        let bit = 1u16 << f as u8;
        if self.seen & bit != 0 {
            return Err(Refusal::Duplicate(unique_name(f)));
        }
        self.seen |= bit;
        match f {
            Field::Host if !valid_host(value) => return Err(Refusal::BadHost),
            Field::Host => self.host = Some(value),
            Field::ContentLength => self.length = Some(value),
            Field::TransferEncoding => self.coding = Some(value),
            _ => {}
        }
        Ok(f)
    }

    /// The Host header, once `see` has taken it.
    pub fn host(&self) -> Option<&'a [u8]> {
        self.host
    }

    /// The checks nginx makes once the head is complete, in nginx's order, and how the body
    /// ends.
    pub fn finish(&self, version: Version) -> Result<Body, Refusal> {
        if self.host.is_none() && version == Version::Http11 {
            return Err(Refusal::NoHost);
        }
        let length = match self.length {
            Some(v) => Some(content_length(v).ok_or(Refusal::BadLength)?),
            None => None,
        };
        let Some(coding) = self.coding else {
            return Ok(length.map_or(Body::None, Body::Length));
        };
        match version {
            Version::Http10 => Err(Refusal::ChunkedHttp10),
            Version::H2 => Err(Refusal::Malformed("Transfer-Encoding in HTTP/2")),
            Version::Http11 if !coding.trim_ascii().eq_ignore_ascii_case(b"chunked") => Err(Refusal::UnknownCoding),
            Version::Http11 if length.is_some() => Err(Refusal::LengthAndChunked),
            Version::Http11 => Ok(Body::Chunked),
        }
    }
}

/// A `Content-Length` value as nginx reads it: digits only (no sign, no list), surrounding
/// whitespace aside, at most `i64::MAX`.
pub fn content_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for d in v {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        if n > i64::MAX as u64 {
            return None;
        }
    }
    Some(n)
}

/// Host bytes that need no look: all but `.`, `:`, `[`, `]`, `/`, space, controls and DEL.
const HOST_PLAIN: [bool; 256] = {
    let mut t = [true; 256];
    let mut c = 0;
    while c <= 0x20 {
        t[c] = false;
        c += 1;
    }
    t[0x7f] = false;
    t[b'.' as usize] = false;
    t[b':' as usize] = false;
    t[b'[' as usize] = false;
    t[b']' as usize] = false;
    t[b'/' as usize] = false;
    t
};

/// nginx's `ngx_http_validate_host`: no `..`, `/`, space or control byte anywhere, and a name
/// (what comes before a port) that is not empty once a trailing dot is dropped. Every request
/// passes here, so plain bytes cost one table look each.
fn valid_host(host: &[u8]) -> bool {
    let host = host.trim_ascii();
    let mut name_len = host.len();
    // Where the last dot ends (its index plus one); 0 while there has been none.
    let mut dot_end = 0;
    let (mut in_literal, mut in_port) = (false, false);
    let mut i = 0;
    while i < host.len() {
        let c = host[i];
        i += 1;
        if HOST_PLAIN[usize::from(c)] {
            continue;
        }
        match c {
            b'.' => {
                if dot_end != 0 && dot_end == i - 1 {
                    return false;
                }
                dot_end = i;
            }
            b':' if !in_literal && !in_port => {
                name_len = i - 1;
                in_port = true;
            }
            b'[' if i == 1 => in_literal = true,
            b']' if in_literal => {
                name_len = i;
                in_literal = false;
                in_port = true;
            }
            b'/' | 0..=0x20 | 0x7f => return false,
            _ => {}
        }
    }
    if name_len > 0 && dot_end == name_len {
        name_len -= 1;
    }
    name_len > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Header lines, the version, and nginx's answer.
    type Case<'a> = (&'a [(&'a str, &'a str)], Version, Result<Body, Refusal>);

    fn rules(headers: &[(&str, &str)], version: Version) -> Result<Body, Refusal> {
        let mut r = Rules::default();
        for (name, value) in headers {
            r.see(name, value.as_bytes())?;
        }
        r.finish(version)
    }

    #[test]
    fn ambiguous_heads_are_refused_as_nginx_refuses_them() {
        use Refusal::*;
        let h = ("Host", "a");
        let cases: &[Case] = &[
            (&[h], Version::Http11, Ok(Body::None)),
            (&[h, ("content-length", " 5 ")], Version::Http11, Ok(Body::Length(5))),
            (&[h, ("Content-Length", "0000000000000000000000005")], Version::Http11, Ok(Body::Length(5))),
            (&[h, ("Content-Length", "9223372036854775807")], Version::Http11, Ok(Body::Length(i64::MAX as u64))),
            (&[h, ("Content-Length", "9223372036854775808")], Version::Http11, Err(BadLength)),
            (&[h, ("Content-Length", "99999999999999999999999")], Version::Http11, Err(BadLength)),
            (&[h, ("Content-Length", "5, 5")], Version::Http11, Err(BadLength)),
            (&[h, ("Content-Length", "-1")], Version::Http11, Err(BadLength)),
            (&[h, ("Content-Length", "+5")], Version::Http11, Err(BadLength)),
            (&[h, ("Content-Length", "abc")], Version::Http11, Err(BadLength)),
            (&[h, ("Content-Length", "")], Version::Http11, Err(BadLength)),
            (&[h, ("Content-Length", "5"), ("content-length", "5")], Version::Http11, Err(Duplicate("Content-Length"))),
            (&[h, ("Transfer-Encoding", " CHUNKED ")], Version::Http11, Ok(Body::Chunked)),
            (&[h, ("Transfer-Encoding", "chunked"), ("Content-Length", "5")], Version::Http11, Err(LengthAndChunked)),
            (&[h, ("Content-Length", "5"), ("Transfer-Encoding", "chunked")], Version::Http11, Err(LengthAndChunked)),
            (&[h, ("Transfer-Encoding", "gzip, chunked")], Version::Http11, Err(UnknownCoding)),
            (&[h, ("Transfer-Encoding", "chunked, chunked")], Version::Http11, Err(UnknownCoding)),
            (&[h, ("Transfer-Encoding", "")], Version::Http11, Err(UnknownCoding)),
            (
                &[h, ("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")],
                Version::Http11,
                Err(Duplicate("Transfer-Encoding")),
            ),
            (&[h, ("Transfer-Encoding", "chunked")], Version::Http10, Err(ChunkedHttp10)),
            (&[], Version::Http11, Err(NoHost)),
            (&[], Version::Http10, Ok(Body::None)),
            (&[], Version::H2, Ok(Body::None)),
            (&[h, ("HOST", "a")], Version::Http11, Err(Duplicate("Host"))),
            (&[h, ("HOST", "a")], Version::Http10, Err(Duplicate("Host"))),
            (&[h, ("Authorization", "a"), ("Authorization", "b")], Version::Http11, Err(Duplicate("Authorization"))),
            (&[h, ("If-None-Match", "a"), ("if-none-match", "b")], Version::Http11, Err(Duplicate("If-None-Match"))),
            (&[h, ("Expect", "a"), ("Expect", "a")], Version::Http11, Err(Duplicate("Expect"))),
            (&[h, ("Cookie", "a"), ("Cookie", "b"), ("Range", "x"), ("Range", "x")], Version::Http11, Ok(Body::None)),
        ];
        for (headers, version, want) in cases {
            assert_eq!(&rules(headers, *version), want, "{headers:?} {version:?}");
        }
    }

    #[test]
    fn hosts_are_checked_like_nginx() {
        // What nginx 1.22 answered for each Host value.
        for (host, ok) in [
            ("a", true),
            ("web.service.consul:88", true),
            (".a", true),
            ("a.", true),
            ("[::1]:80", true),
            ("a:b:c", true),
            ("a?b", true),
            ("a@b", true),
            ("a_b", true),
            ("a\\b", true),
            ("\u{e9}", true),
            ("", false),
            (".", false),
            ("a..b", false),
            ("a/b", false),
            ("a b", false),
            ("a\tb", false),
            (":80", false),
            ("a:8/0", false),
            ("a:1..2", false),
        ] {
            assert_eq!(valid_host(host.as_bytes()), ok, "{host:?}");
        }
    }

    #[test]
    fn targets_are_origin_or_absolute_form() {
        for (t, ok) in [
            ("/", true),
            ("//a", true),
            ("http://a/b", true),
            ("HTTP://a", true),
            ("ftp://a/", true),
            ("*", false),
            ("a/b", false),
            ("a:443", false),
            ("http:/a", false),
            ("", false),
        ] {
            assert_eq!(check_target(t).is_ok(), ok, "{t:?}");
        }
    }

    fn line(prefix: &str, total: usize) -> String {
        format!("{prefix}{}\r\n", "a".repeat(total - prefix.len() - 2))
    }

    #[test]
    fn head_sizes_are_limited_as_nginx_fills_its_buffers() {
        let start = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n";
        let request_line = |total: usize| format!("GET /{} HTTP/1.1\r\n", "a".repeat(total - 16));
        let with_lines = |n: usize, len: usize| format!("{start}{}\r\n", line("X-Big: ", len).repeat(n));
        // Each case was sent to nginx 1.22 with default buffers; the expected answers are its.
        let cases: Vec<(String, Result<(), Refusal>)> = vec![
            (format!("{}Host: x\r\n\r\n", request_line(8192)), Ok(())),
            (format!("{}Host: x\r\n\r\n", request_line(8193)), Err(Refusal::UriTooLarge)),
            (with_lines(1, 8192), Ok(())),
            (with_lines(1, 8193), Err(Refusal::HeaderTooLarge)),
            (with_lines(4, 8000), Ok(())),
            (with_lines(4, 8192), Err(Refusal::HeaderTooLarge)),
            (with_lines(5, 8000), Err(Refusal::HeaderTooLarge)),
            (with_lines(8, 4096), Err(Refusal::HeaderTooLarge)),
            (with_lines(7, 4097), Err(Refusal::HeaderTooLarge)),
            (with_lines(327, 100), Ok(())),
            (with_lines(337, 100), Err(Refusal::HeaderTooLarge)),
        ];
        for (head, want) in &cases {
            assert_eq!(check_size(head.as_bytes(), true), *want, "{} bytes", head.len());
        }
        // While the head is arriving: refused once a line can no longer fit, not before.
        let partial = request_line(9000);
        assert_eq!(check_size(&partial.as_bytes()[..8191], false), Ok(()));
        assert_eq!(check_size(&partial.as_bytes()[..8192], false), Err(Refusal::UriTooLarge));
        let partial = with_lines(1, 20_000);
        assert_eq!(check_size(&partial.as_bytes()[..start.len() + 8191], false), Ok(()));
        assert_eq!(check_size(&partial.as_bytes()[..start.len() + 8192], false), Err(Refusal::HeaderTooLarge));
        let partial = with_lines(5, 8000);
        assert_eq!(check_size(&partial.as_bytes()[..start.len() + 4 * 8000 + 191], false), Ok(()));
        assert_eq!(
            check_size(&partial.as_bytes()[..start.len() + 4 * 8000 + 192], false),
            Err(Refusal::HeaderTooLarge)
        );
        assert_eq!(check_size(b"GET / HTTP/1.1\r\n", false), Ok(()));
    }

    #[test]
    fn pages_carry_nginx_status_lines_and_titles() {
        let (page, body_len) = Refusal::UriTooLarge.page(false);
        let page = String::from_utf8(page).unwrap();
        assert!(page.ends_with(&format!("Content-Length: {body_len}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n414 Request-URI Too Large\nlb: the request line is longer than 8192 bytes\n")), "{page}");
        assert!(page.starts_with("HTTP/1.1 414 Request-URI Too Large\r\n"), "{page}");
        assert!(page.contains("\r\nConnection: close\r\n"), "{page}");
        assert!(page.contains("\r\n\r\n414 Request-URI Too Large\nlb: "), "{page}");
        let (page, body_len) = Refusal::HeaderTooLarge.page(true);
        assert_eq!(body_len, 0);
        let page = String::from_utf8(page).unwrap();
        assert!(page.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{page}");
        assert!(page.ends_with("\r\n\r\n"), "a HEAD answer has no body: {page}");
    }
}
