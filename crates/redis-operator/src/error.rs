use thiserror::Error;

/// What can go wrong in one reconcile. Problems the user must fix (a child we do not own, an
/// object the API server rejects) are not errors: they become the `Failed` phase in the status.
#[derive(Debug, Error)]
pub enum Error {
    /// The object came without a field the API server always sets; retrying cannot help.
    #[error("RedisCluster has no metadata.{0}; it must be read from the API server")]
    MissingObjectKey(&'static str),

    /// This instance cannot be sure it still holds the leader's Lease (`leader::Tenure`): it
    /// writes nothing, to the API server or to Redis, that another leader may be deciding.
    #[error("not sure to hold the leader's lease; nothing written")]
    NotLeading,

    /// The system gave no randomness for a new password.
    #[error("cannot make a password: {0}")]
    Randomness(String),

    /// A cached object could not be read back (`trim::Packed`). The cache holds what the
    /// operator wrote itself, so this is a bug; it waits for the object to change.
    #[error("cannot read the cached {kind} back: {source}")]
    Unpack {
        kind: String,
        source: serde_json::Error,
    },

    /// A request to the API server failed.
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    /// Whether trying again later may succeed: conflicts, throttling, server errors and lost
    /// connections. Anything else waits for the object to change instead of retrying hot.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::MissingObjectKey(_) | Error::Unpack { .. } => false,
            Error::Randomness(_) => true,
            // Leadership comes back with the next renewal, or this instance exits.
            Error::NotLeading => true,
            Error::Kube(kube::Error::Api(status)) => {
                matches!(status.code, 409 | 429 | 500..=599) || status.reason == "Timeout"
            }
            // Transport, TLS, timeouts and decoding hiccups: the connection, not the request.
            Error::Kube(_) => true,
        }
    }

    /// A short CamelCase label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::MissingObjectKey(_) => "MissingObjectKey",
            Error::Randomness(_) => "Randomness",
            Error::Unpack { .. } => "Unpack",
            Error::NotLeading => "NotLeading",
            Error::Kube(kube::Error::Api(_)) => "ApiError",
            Error::Kube(_) => "ConnectionError",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api_error(code: u16, reason: &str) -> Error {
        Error::Kube(kube::Error::Api(Box::new(
            Status::failure("injected", reason).with_code(code),
        )))
    }

    #[test]
    fn transient_and_permanent_errors_are_told_apart() {
        let cases = [
            (api_error(409, "Conflict"), true),
            (api_error(429, "TooManyRequests"), true),
            (api_error(500, "InternalError"), true),
            (api_error(503, "ServiceUnavailable"), true),
            (api_error(504, "Timeout"), true),
            (api_error(400, "BadRequest"), false),
            (api_error(403, "Forbidden"), false),
            (api_error(404, "NotFound"), false),
            (api_error(422, "Invalid"), false),
            (Error::MissingObjectKey("uid"), false),
        ];
        for (error, transient) in cases {
            assert_eq!(error.is_transient(), transient, "{error}");
        }
    }
}
