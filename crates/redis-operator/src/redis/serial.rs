//! A Redis connection that carries one request at a time and holds no buffer between requests.
//!
//! The operator sends each pod a few small requests per probe interval, one after another, so
//! it needs neither pipelining across callers nor the 16 KiB of read and write buffers (and the
//! driver task) a multiplexed connection keeps per pod: at 1000 pods those were a fifth of the
//! operator's memory. A request's reply is read into a buffer that lives as long as the request.
//! The `redis` crate still encodes the commands and decodes the replies.

use std::sync::Arc;

use ::redis::aio::ConnectionLike;
use ::redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use kube::api::Portforwarder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

/// A byte stream to a pod's Redis: TCP or a port-forward, maybe with TLS.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// Bytes read from the socket at a time.
const CHUNK: usize = 1024;

/// One connection to one pod's Redis; clones share it, and their requests take turns.
#[derive(Clone)]
pub struct SerialConnection {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    stream: Box<dyn Stream>,
    /// A request was sent and its replies were not all read (its caller gave up): the next
    /// bytes on the stream would answer that request, not the next one.
    unfinished: bool,
    /// The port-forward the stream runs through, closed with the connection.
    forwarder: Option<Portforwarder>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(forwarder) = &self.forwarder {
            forwarder.abort();
        }
    }
}

impl SerialConnection {
    /// A connection over `stream`, logged in as `user` when given (`AUTH user password`).
    pub async fn open(
        stream: Box<dyn Stream>,
        forwarder: Option<Portforwarder>,
        user: Option<(&str, &str)>,
    ) -> RedisResult<Self> {
        let mut connection = Self {
            inner: Arc::new(Mutex::new(Inner {
                stream,
                unfinished: false,
                forwarder,
            })),
        };
        if let Some((name, password)) = user {
            ::redis::cmd("AUTH")
                .arg(name)
                .arg(password)
                .query_async::<()>(&mut connection)
                .await?;
        }
        Ok(connection)
    }

    /// Sends `request` and reads `replies` replies to it.
    async fn exchange(&self, request: &[u8], replies: usize) -> RedisResult<Vec<Value>> {
        let mut inner = self.inner.lock().await;
        if inner.unfinished {
            return Err(broken(
                "an earlier request on this connection was left unanswered",
            ));
        }
        inner.unfinished = true;
        inner.stream.write_all(request).await?;
        inner.stream.flush().await?;
        let mut received = Vec::new();
        let mut values = Vec::with_capacity(replies);
        let mut start = 0;
        while values.len() < replies {
            if let Some(length) = reply_length(&received[start..]) {
                values.push(::redis::parse_redis_value(
                    &received[start..start + length],
                )?);
                start += length;
                continue;
            }
            let mut chunk = [0; CHUNK];
            let read = inner.stream.read(&mut chunk).await?;
            if read == 0 {
                return Err(broken("the connection was closed"));
            }
            received.extend_from_slice(&chunk[..read]);
        }
        // Bytes nobody asked for would be taken for the next request's reply.
        inner.unfinished = start != received.len();
        Ok(values)
    }
}

fn broken(why: &'static str) -> RedisError {
    RedisError::from((ErrorKind::Io, why))
}

impl ConnectionLike for SerialConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut values = self.exchange(&cmd.get_packed_command(), 1).await?;
            Ok(values.remove(0))
        })
    }

    /// The first `offset` replies answer a transaction's queueing: they are checked for
    /// errors and left out.
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut values = self
                .exchange(&pipeline.get_packed_pipeline(), offset + count)
                .await?;
            for queued in values.drain(..offset) {
                queued.extract_error()?;
            }
            Ok(values)
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// How many bytes the first reply in `bytes` takes (RESP2 or RESP3), or None while it is not
/// all there. A header that is not a number ends the reply at its line, so that the parser
/// reports it instead of the connection waiting for more.
fn reply_length(bytes: &[u8]) -> Option<usize> {
    let line = bytes.windows(2).position(|pair| pair == b"\r\n")? + 2;
    let Some(size) = bytes
        .get(1..line - 2)
        .and_then(|header| std::str::from_utf8(header).ok())
        .and_then(|header| header.parse::<i64>().ok())
    else {
        return Some(line);
    };
    // A negative size is a null: nothing follows the header.
    let Ok(size) = usize::try_from(size) else {
        return Some(line);
    };
    let elements = match bytes[0] {
        // Blob string, verbatim string, blob error: `size` bytes and CRLF.
        b'$' | b'=' | b'!' => {
            let end = line + size + 2;
            return (bytes.len() >= end).then_some(end);
        }
        b'*' | b'~' | b'>' => size,
        // Maps and attributes: keys and values. An attribute comes before the reply it is about.
        b'%' => size * 2,
        b'|' => size * 2 + 1,
        _ => return Some(line),
    };
    (0..elements).try_fold(line, |end, _| {
        reply_length(&bytes[end..]).map(|length| end + length)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[test]
    fn a_reply_is_complete_only_with_all_its_bytes() {
        let cases: [(&[u8], Option<usize>); 15] = [
            (b"", None),
            (b"\r\n", Some(2)),
            (b"+OK", None),
            (b"+OK\r\n", Some(5)),
            (b"+OK\r\n+OK\r\n", Some(5)),
            (b"-ERR no\r\n", Some(9)),
            (b":42\r\n", Some(5)),
            (b"$5\r\nhel", None),
            (b"$5\r\nhello\r\n", Some(11)),
            (b"$-1\r\n", Some(5)),
            (b"*2\r\n$1\r\na\r\n", None),
            (b"*2\r\n$1\r\na\r\n:1\r\n", Some(15)),
            (b"*-1\r\n", Some(5)),
            (b"%1\r\n+k\r\n+v\r\n", Some(12)),
            (b"$x\r\n", Some(4)),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                reply_length(bytes),
                expected,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    /// A connection to a scripted server: it answers each request with the next of `answers`
    /// and returns what it was sent.
    async fn served(
        answers: &'static [&'static [u8]],
        talk: impl AsyncFnOnce(SerialConnection) -> (),
    ) -> Vec<u8> {
        let (client, mut server) = duplex(1024);
        let serve = tokio::spawn(async move {
            let mut heard = Vec::new();
            for answer in answers {
                let mut chunk = [0; 256];
                let read = server.read(&mut chunk).await.unwrap();
                heard.extend_from_slice(&chunk[..read]);
                // In small pieces, as a slow network would hand them over.
                for piece in answer.chunks(3) {
                    server.write_all(piece).await.unwrap();
                }
            }
            heard
        });
        let connection = SerialConnection::open(Box::new(client), None, None)
            .await
            .unwrap();
        talk(connection).await;
        serve.await.unwrap()
    }

    #[tokio::test]
    async fn a_pipeline_gets_each_reply_however_the_bytes_arrive() {
        let heard = served(&[b"+OK\r\n$5\r\nhello\r\n"], async |mut connection| {
            let (ok, hello): (String, String) = ::redis::pipe()
                .cmd("SET")
                .arg("k")
                .arg("hello")
                .cmd("GET")
                .arg("k")
                .query_async(&mut connection)
                .await
                .unwrap();
            assert_eq!((ok.as_str(), hello.as_str()), ("OK", "hello"));
        })
        .await;
        assert_eq!(
            heard,
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
        );
    }

    #[tokio::test]
    async fn a_refused_login_says_why() {
        let (client, mut server) = duplex(256);
        tokio::spawn(async move {
            let mut chunk = [0; 256];
            let _ = server.read(&mut chunk).await;
            let refusal = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
            server.write_all(refusal).await.unwrap();
        });
        let error = SerialConnection::open(Box::new(client), None, Some(("operator", "secret")))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(crate::redis::client::refused(&error), "{error}");
    }

    #[tokio::test]
    async fn a_request_left_unanswered_makes_the_connection_refuse_the_next() {
        let (client, _server) = duplex(256);
        let mut connection = SerialConnection::open(Box::new(client), None, None)
            .await
            .unwrap();
        let ping = ::redis::cmd("PING");
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            ping.query_async::<String>(&mut connection),
        )
        .await;
        assert!(gave_up.is_err(), "the silent server answered");
        let error = ping
            .query_async::<String>(&mut connection)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("left unanswered"), "{error}");
    }

    #[tokio::test]
    async fn a_closed_connection_is_an_error_not_a_wait() {
        let (client, server) = duplex(256);
        drop(server);
        let mut connection = SerialConnection::open(Box::new(client), None, None)
            .await
            .unwrap();
        let error = ::redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .unwrap_err();
        assert!(error.is_io_error(), "{error}");
    }
}
