//! USL fit, knee detection, bottleneck diagnosis, scale-up/out/refactor decision and cost model.
