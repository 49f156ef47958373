import JobKinds
import JobQueue
import JobWorker
import MLJobs
import Pipelines
import Schedules

/// The handlers `jobfarm worker` runs: the built-in kinds and the ML kinds (inference, batch_analysis, quantize,
/// validate, train). ML settings come from `JOBFARM_ML_*` / `JOBFARM_BLAS_THREADS` (see docs/JOBS.md).
func makeRegistry(farm: JobFarm, mlOptions: MLJobOptions = .fromEnvironment()) -> HandlerRegistry {
    var registry = HandlerRegistry.builtins()
    registerMLJobs(into: &registry, farm: farm, options: mlOptions)
    // Schedule firings (`jf.schedule`): every worker runs them, so a schedule fires wherever its queue is served.
    registry.register(ScheduleFiringJob(book: ScheduleBook(farm: farm, starter: scheduledRunStarter(farm: farm))))
    return registry
}

/// What starts the pipeline runs schedules fire: the pipeline engine (`JobFarm.startRun`).
func scheduledRunStarter(farm: JobFarm) -> (any PipelineRunStarter)? { FarmRunStarter(farm: farm) }
