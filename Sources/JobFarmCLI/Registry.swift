import JobKinds
import JobQueue
import JobWorker

/// The handlers `jobfarm worker` runs: the built-in kinds (and, as they land, the ML kinds).
func makeRegistry(farm: JobFarm) -> HandlerRegistry {
    HandlerRegistry.builtins()
}
