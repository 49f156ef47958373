import JobKinds
import JobQueue
import JobWorker
import MLJobs

/// The handlers `jobfarm worker` runs: the built-in kinds and the ML kinds (inference, batch_analysis, quantize,
/// validate, train). ML settings come from `JOBFARM_ML_*` / `JOBFARM_BLAS_THREADS` (see docs/JOBS.md).
func makeRegistry(farm: JobFarm, mlOptions: MLJobOptions = .fromEnvironment()) -> HandlerRegistry {
    var registry = HandlerRegistry.builtins()
    registerMLJobs(into: &registry, farm: farm, options: mlOptions)
    return registry
}
