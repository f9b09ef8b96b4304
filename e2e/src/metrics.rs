//! An operator's `/metrics`, read the way Prometheus reads it: one parser ([`samples`]), and
//! the few figures the suite and the bench ask of it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::TestResult;

/// GET `path` from a local HTTP port; the body, or an error if the status is not 200.
pub fn http_get(port: u16, path: &str) -> TestResult<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no HTTP header")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("GET {path}: {}", head.lines().next().unwrap_or_default()).into());
    }
    Ok(body.to_owned())
}

/// One sample of Prometheus text: `name{label="value",...} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample in Prometheus (or OpenMetrics) text; comments and unparsable lines are left
/// out. Label values with commas or escaped quotes are not produced by the operator.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.strip_suffix('}')?),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((key.to_owned(), value.trim_matches('"').to_owned()))
                })
                .collect();
            Some(Sample {
                name: name.to_owned(),
                labels,
                value,
            })
        })
        .collect()
}

/// The value of one unlabelled series, such as `redis_operator_leader`.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    samples(text)
        .into_iter()
        .find(|s| s.name == name && s.labels.is_empty())
        .map(|s| s.value)
}

/// The samples of `name`, keyed by the values of `labels` joined with `/`.
pub fn by_labels(text: &str, name: &str, labels: &[&str]) -> BTreeMap<String, f64> {
    samples(text)
        .into_iter()
        .filter(|s| s.name == name)
        .map(|s| {
            let key: Vec<&str> = labels
                .iter()
                .map(|l| s.labels.get(*l).map_or("", String::as_str))
                .collect();
            (key.join("/"), s.value)
        })
        .fold(BTreeMap::new(), |mut sums, (key, value)| {
            // Series that differ only in labels left out add up.
            *sums.entry(key).or_insert(0.0) += value;
            sums
        })
}

/// Every reconcile an operator ran, whatever its result, from its /metrics text.
pub fn reconciles_total(text: &str) -> f64 {
    by_labels(text, "redis_operator_reconciles_total", &["result"])
        .values()
        .sum()
}

/// The requests an operator on a local port sent to the API server, by verb (every verb the
/// operator could use is present, 0 when unused), from its own counter.
pub fn request_counts(port: u16) -> TestResult<BTreeMap<String, f64>> {
    let text = http_get(port, "/metrics")?;
    let mut counts = by_labels(&text, "redis_operator_kube_requests_total", &["verb"]);
    for verb in [
        "get", "list", "watch", "create", "patch", "update", "delete",
    ] {
        counts.entry(verb.to_owned()).or_insert(0.0);
    }
    Ok(counts)
}

/// The operator's requests to the API server so far, by `verb resource` (`patch pods`).
pub fn request_counts_by_resource(port: u16) -> TestResult<BTreeMap<String, f64>> {
    let text = http_get(port, "/metrics")?;
    Ok(by_labels(
        &text,
        "redis_operator_kube_requests_total",
        &["verb", "resource"],
    )
    .into_iter()
    .map(|(key, n)| (key.replacen('/', " ", 1), n))
    .collect())
}

/// The `q` quantile of `values` by the nearest rank (1.0 is the maximum); None when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

/// The operator's Redis commands so far, by `command/result` (from its /metrics).
pub fn redis_command_counts(port: u16) -> TestResult<BTreeMap<String, f64>> {
    let text = http_get(port, "/metrics")?;
    Ok(by_labels(
        &text,
        "redis_operator_redis_requests_total",
        &["command", "result"],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_ranks() {
        let values = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(quantile(&values, 0.5), Some(3.0));
        assert_eq!(quantile(&values, 0.99), Some(5.0));
        assert_eq!(quantile(&values, 1.0), Some(5.0));
        assert_eq!(quantile(&values, 0.0), Some(1.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn prometheus_text_parses_into_samples() {
        let text = "# HELP x y\n\
                    redis_operator_leader 1\n\
                    redis_operator_reconciles_total{result=\"ok\"} 5\n\
                    redis_operator_reconciles_total{result=\"error\"} 2\n\
                    redis_operator_redis_requests_total{command=\"info\",result=\"ok\"} 7\n\
                    # EOF\n";
        assert_eq!(metric(text, "redis_operator_leader"), Some(1.0));
        assert_eq!(metric(text, "redis_operator_reconciles_total"), None);
        assert_eq!(reconciles_total(text), 7.0);
        assert_eq!(
            by_labels(
                text,
                "redis_operator_redis_requests_total",
                &["command", "result"]
            ),
            BTreeMap::from([("info/ok".to_owned(), 7.0)])
        );
        // Series left apart only by a label not asked for add up.
        assert_eq!(
            by_labels(text, "redis_operator_reconciles_total", &[]),
            BTreeMap::from([(String::new(), 7.0)])
        );
    }
}
