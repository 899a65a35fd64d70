//! Additive Holt-Winters (triple exponential smoothing), written here so the forecast is
//! small, deterministic and testable.
//!
//! level  l' = alpha (x - s[i]) + (1 - alpha)(l + b)
//! trend  b' = beta (l' - l) + (1 - beta) b
//! season s[i] = gamma (x - l') + (1 - gamma) s[i]
//! forecast h steps ahead = l + h b + s[(i + h) mod m]
//!
//! The model initialises from its first full season (level = its mean, trend 0, seasonal
//! = deviations from that mean); before that it forecasts nothing. Pure arithmetic: no
//! clock, no I/O.

/// An additive Holt-Winters model over equally spaced observations.
#[derive(Debug, Clone)]
pub struct HoltWinters {
    alpha: f64,
    beta: f64,
    gamma: f64,
    /// Season length in observations.
    period: usize,
    level: f64,
    trend: f64,
    seasonal: Vec<f64>,
    /// Observations seen so far.
    seen: u64,
    /// The first season, buffered until the model can initialise.
    warmup: Vec<f64>,
}

impl HoltWinters {
    /// A model with smoothing factors and a season of `period` observations (>= 2).
    pub fn new(alpha: f64, beta: f64, gamma: f64, period: usize) -> Self {
        let period = period.max(2);
        Self {
            alpha,
            beta,
            gamma,
            period,
            level: 0.0,
            trend: 0.0,
            seasonal: vec![0.0; period],
            seen: 0,
            warmup: Vec::with_capacity(period),
        }
    }

    /// Observations seen so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Full seasons seen so far.
    pub fn seasons(&self) -> u64 {
        self.seen / self.period as u64
    }

    /// Adds the next observation.
    pub fn observe(&mut self, x: f64) {
        let x = if x.is_finite() { x } else { 0.0 };
        let i = (self.seen % self.period as u64) as usize;
        self.seen += 1;
        if self.seen <= self.period as u64 {
            self.warmup.push(x);
            if self.warmup.len() == self.period {
                let mean = self.warmup.iter().sum::<f64>() / self.period as f64;
                self.level = mean;
                self.trend = 0.0;
                for (s, v) in self.seasonal.iter_mut().zip(&self.warmup) {
                    *s = v - mean;
                }
                self.warmup = Vec::new();
            }
            return;
        }
        let prev_level = self.level;
        let s = self.seasonal[i];
        self.level = self.alpha * (x - s) + (1.0 - self.alpha) * (self.level + self.trend);
        self.trend = self.beta * (self.level - prev_level) + (1.0 - self.beta) * self.trend;
        self.seasonal[i] = self.gamma * (x - self.level) + (1.0 - self.gamma) * s;
    }

    /// The forecast `h` (>= 1) observations after the last one, or `None` before the
    /// first full season.
    pub fn forecast(&self, h: u64) -> Option<f64> {
        if self.seen < self.period as u64 {
            return None;
        }
        let h = h.max(1);
        let i = ((self.seen - 1 + h) % self.period as u64) as usize;
        Some(self.level + h as f64 * self.trend + self.seasonal[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_pure_season_exactly() {
        let season = [10.0, 20.0, 40.0, 20.0];
        let mut hw = HoltWinters::new(0.5, 0.1, 0.5, 4);
        assert_eq!(hw.forecast(1), None);
        for _ in 0..5 {
            for x in season {
                hw.observe(x);
            }
        }
        for h in 1..=8 {
            let want = season[((h - 1) % 4) as usize];
            let got = hw.forecast(h).unwrap();
            assert!((got - want).abs() < 1e-6, "h={h}: {got} vs {want}");
        }
    }

    #[test]
    fn follows_a_trend_on_top_of_the_season() {
        let season = [0.0, 5.0, 10.0, 5.0];
        let mut hw = HoltWinters::new(0.5, 0.3, 0.2, 4);
        let mut t = 0.0;
        for _ in 0..30 {
            for s in season {
                hw.observe(100.0 + t + s);
                t += 1.0;
            }
        }
        // Next value: 100 + 120 + season[0].
        let got = hw.forecast(1).unwrap();
        assert!((got - 220.0).abs() < 3.0, "{got}");
        let got = hw.forecast(3).unwrap();
        assert!((got - 232.0).abs() < 3.0, "{got}");
    }
}
