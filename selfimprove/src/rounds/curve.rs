//! A learning curve over rounds: held-out accuracy after round r modelled as `a − b·e^(−c·r)` (gains that
//! shrink by a constant factor each round), fitted by least squares, to predict what one more round would add.
//! With three or more points; `a` is where the loop levels off, at most 1 (an accuracy or pass rate cannot
//! exceed it).

use serde::Serialize;

/// A fitted curve `a − b·e^(−c·r)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Curve {
    pub a: f64,
    pub b: f64,
    pub c: f64,
    /// Root-mean-square error of the fit over the points.
    pub rmse: f64,
}

impl Curve {
    pub fn at(&self, round: f64) -> f64 {
        self.a - self.b * (-self.c * round).exp()
    }

    /// What round `last + 1` is predicted to add over round `last`.
    pub fn next_gain(&self, last: f64) -> f64 {
        self.at(last + 1.0) - self.at(last)
    }
}

/// Least squares over `(round, value)` points: for each rate `c` on a log grid, `a` and `b` have a closed form;
/// the best `c` wins. `None` with fewer than three points (three parameters).
pub fn fit(points: &[(f64, f64)]) -> Option<Curve> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mut best: Option<Curve> = None;
    for i in 0..=400 {
        let c = 0.01 * (500.0f64).powf(i as f64 / 400.0); // 0.01 … 5
                                                          // value = a + b·x with x = −e^(−c·r): ordinary least squares in (a, b).
        let xs: Vec<f64> = points.iter().map(|(r, _)| -(-c * r).exp()).collect();
        let (mx, my) = (xs.iter().sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
        let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
        if sxx < 1e-15 {
            continue;
        }
        let sxy: f64 = xs.iter().zip(points).map(|(x, p)| (x - mx) * (p.1 - my)).sum();
        let b = sxy / sxx;
        let a = my - b * mx;
        if a > 1.0 + 1e-9 {
            continue; // a level above 100%: not a curve of accuracy
        }
        let curve = Curve { a, b, c, rmse: 0.0 };
        let sse: f64 = points.iter().map(|&(r, y)| (curve.at(r) - y).powi(2)).sum();
        let curve = Curve { rmse: (sse / n).sqrt(), ..curve };
        if best.is_none_or(|b| curve.rmse < b.rmse) {
            best = Some(curve);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saturating_curve_is_recovered_and_its_next_gain_predicted() {
        let truth = Curve { a: 0.8, b: 0.6, c: 0.7, rmse: 0.0 };
        let points: Vec<(f64, f64)> = (0..5).map(|r| (r as f64, truth.at(r as f64))).collect();
        let f = fit(&points).unwrap();
        assert!(f.rmse < 1e-3, "{f:?}");
        assert!((f.next_gain(4.0) - truth.next_gain(4.0)).abs() < 2e-3, "{f:?}");
        assert!(fit(&points[..2]).is_none());
        // Nearly straight gains still level off at or below 1.
        let straight = [(0.0, 0.14), (1.0, 0.24), (2.0, 0.30), (3.0, 0.39)];
        let f = fit(&straight).unwrap();
        assert!(f.a <= 1.0 && f.next_gain(3.0) > 0.0, "{f:?}");
        // Falling accuracy predicts a loss.
        let falling = [(0.0, 0.5), (1.0, 0.4), (2.0, 0.35)];
        assert!(fit(&falling).unwrap().next_gain(2.0) < 0.0);
    }
}
