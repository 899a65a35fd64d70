//! Pure autoscaling policies (HPA, KPA, step, scheduled, predictive), stabilisation, trace simulator, elasticity metrics.
