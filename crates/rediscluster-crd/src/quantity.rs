//! Kubernetes quantities ("1Gi", "512Mi", "1.5G", "1e9"), as far as the spec needs them:
//! their size in bytes, in Rust for the operator and in CEL for admission.

/// Binary and decimal suffixes and what they multiply by.
const SUFFIXES: [(&str, f64); 14] = [
    ("Ki", 1024.0),
    ("Mi", 1_048_576.0),
    ("Gi", 1_073_741_824.0),
    ("Ti", 1_099_511_627_776.0),
    ("Pi", 1_125_899_906_842_624.0),
    ("Ei", 1_152_921_504_606_846_976.0),
    ("n", 1e-9),
    ("u", 1e-6),
    ("m", 1e-3),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
];

/// What a quantity amounts to (bytes, for memory and storage), or `None` when it is not a
/// quantity. The full Kubernetes grammar: an optional sign, a decimal number, then a binary
/// suffix (`Ki`..`Ei`), a decimal one (`n`..`E`) or an exponent (`e3`, `E-2`).
pub fn quantity_value(quantity: &str) -> Option<f64> {
    let quantity = quantity.trim();
    let number_end = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(number_end);
    let digits = number.trim_start_matches(['+', '-']);
    if digits.is_empty()
        || digits.contains(['+', '-'])
        || digits.matches('.').count() > 1
        || digits == "."
    {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "E" => 1e18,
        exponent if exponent.starts_with(['e', 'E']) => 10f64.powi(exponent[1..].parse().ok()?),
        suffix => SUFFIXES.iter().find(|(s, _)| *s == suffix)?.1,
    };
    Some(value * factor)
}

/// The quantities admission can size: a plain or decimal number with one of the common
/// suffixes (no exponent, no fractions of a byte). Others are sized by the operator, which
/// reports a problem in the status.
pub const CEL_SIZED: &str = r"^[0-9]+([.][0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$";

/// A CEL expression for the bytes of `quantity` (a CEL string expression that matches
/// [`CEL_SIZED`]), as a double: the API servers this release supports (1.28) do not offer
/// CEL's `quantity()` to new rules yet.
pub fn cel_bytes(quantity: &str) -> String {
    let factors: Vec<String> = std::iter::once(("", 1.0))
        .chain(
            SUFFIXES
                .iter()
                .copied()
                .filter(|(suffix, _)| !matches!(*suffix, "n" | "u" | "m")),
        )
        .chain([("E", 1e18)])
        .map(|(suffix, factor)| format!("'{suffix}': {factor:.1}"))
        .collect();
    format!(
        r"(double({quantity}.find('^[0-9]+([.][0-9]+)?')) * {{{}}}[{quantity}.find('[a-zA-Z]*$')])",
        factors.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_in_bytes() {
        let cases = [
            ("1Gi", Some(1_073_741_824.0)),
            ("64Mi", Some(67_108_864.0)),
            ("1.5Gi", Some(1_610_612_736.0)),
            ("500M", Some(5e8)),
            ("1e9", Some(1e9)),
            ("1E3", Some(1e3)),
            ("2E", Some(2e18)),
            ("128974848", Some(128_974_848.0)),
            ("129k", Some(129_000.0)),
            ("500m", Some(0.5)),
            ("+1Ki", Some(1024.0)),
            ("", None),
            ("Gi", None),
            ("1GB", None),
            ("1..5Gi", None),
            ("1-2", None),
            ("one", None),
        ];
        for (quantity, bytes) in cases {
            assert_eq!(quantity_value(quantity), bytes, "{quantity}");
        }
    }

    #[test]
    fn the_cel_expression_knows_every_admitted_suffix() {
        let expression = cel_bytes("self.size");
        for suffix in [
            "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E",
        ] {
            assert!(
                expression.contains(&format!("'{suffix}': ")),
                "{suffix}: {expression}"
            );
            assert!(CEL_SIZED.contains(suffix));
        }
        assert!(expression.contains("'Mi': 1048576.0"), "{expression}");
        assert!(expression.contains("'': 1.0"), "{expression}");
        assert!(!expression.contains("'m': "), "no milli-bytes");
    }
}
