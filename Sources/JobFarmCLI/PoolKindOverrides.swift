import JobKinds
import JobWorker
import MLJobs
import Schedules
import WorkerPools

/// A pool's per-kind `retry:` and `timeouts:` from `workers.yaml`, checked against the kinds a worker runs and
/// applied to its handlers: the handler's `RetryPolicy` is the default, the file overrides it; a timeout cap lowers
/// a job's own timeout, never raises it.
enum PoolKindOverrides {
    /// The kinds `makeRegistry` registers, without building it (building starts the ML kinds' measurements):
    /// what `jobfarm supervise` checks the file against before it starts any worker.
    static var workerKinds: [String] {
        HandlerRegistry.builtins().kinds + [
            InferenceJob.kind, BatchAnalysisJob.kind, QuantizeJob.kind, ValidateJob.kind, TrainJob.kind, PromoteJob.kind,
            ScheduleFiringJob.kind,
        ]
    }

    /// Every kind the pool's `retry:` or `timeouts:` names that is not among `kinds`, as a configuration error
    /// (file, line, key and the kinds allowed); nil when all are known.
    static func unknownKindError(_ pool: PoolConfiguration, in pools: PoolsConfiguration, kinds: [String]) -> CLIError? {
        let index = pools.pools.firstIndex(where: { $0.name == pool.name }) ?? 0
        let named = pool.retryOverrides.map { ("retry", $0.key, $0.value.line) } + pool.timeoutCaps.map { ("timeouts", $0.key, $0.value.line) }
        for (section, kind, line) in named.sorted(by: { ($0.2 ?? 0, $0.1) < ($1.2 ?? 0, $1.1) }) where !kinds.contains(kind) {
            let error = PoolsConfigurationError(
                path: pools.path, line: line, key: "pools[\(index)].\(section).\(kind)",
                message: "is not a kind the workers run; allowed: \(kinds.sorted().joined(separator: ", "))")
            return CLIError(message: "\(error)", exitCode: CLIError.configurationExitCode)
        }
        return nil
    }

    /// `policy` with the override's fields in place of its own.
    static func policy(_ policy: RetryPolicy, with override: RetryOverride) -> RetryPolicy {
        var result = policy
        if let value = override.maxAttempts { result.maxAttempts = value }
        if let value = override.baseSeconds { result.base = .milliseconds(Int64((value * 1000).rounded())) }
        if let value = override.multiplier { result.multiplier = value }
        if let value = override.capSeconds { result.cap = .milliseconds(Int64((value * 1000).rounded())) }
        if let value = override.jitter { result.jitter = value }
        return result
    }

    /// Applies the pool's overrides to `registry`; a kind it does not run is a configuration error.
    static func apply(_ pool: PoolConfiguration, in pools: PoolsConfiguration, to registry: inout HandlerRegistry) throws {
        if let error = unknownKindError(pool, in: pools, kinds: registry.kinds) { throw error }
        for (kind, override) in pool.retryOverrides {
            if let current = registry.retryPolicy(for: kind) { registry.setRetryPolicy(policy(current, with: override), for: kind) }
        }
        for (kind, cap) in pool.timeoutCaps {
            registry.capTimeout(of: kind, at: .milliseconds(Int64((cap.seconds * 1000).rounded())))
        }
    }
}
