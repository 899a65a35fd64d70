use super::*;

#[test]
fn cookie_values_are_found_among_several_headers() {
    let headers = [
        parse::Header {
            name: "Cookie",
            value: b"a=1; lb = b2 ",
        },
        parse::Header {
            name: "cookie",
            value: b"c=3",
        },
    ];
    assert_eq!(cookie_value(&headers, "lb"), Some(&b"b2"[..]));
    assert_eq!(cookie_value(&headers, "c"), Some(&b"3"[..]));
    assert_eq!(cookie_value(&headers, "x"), None);
}

#[tokio::test]
async fn rewind_yields_the_bytes_already_read_then_the_stream() {
    let (mut a, b) = tokio::io::duplex(64);
    a.write_all(b" world").await.unwrap();
    drop(a);
    let mut r = Rewind::new(b"hello".to_vec(), b);
    let mut out = String::new();
    r.read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "hello world");
}
