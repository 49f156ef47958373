import Foundation
import JobQueue
import Yams

/// The worker pools of a farm, read from `workers.yaml`: what each pool serves, how each of its processes runs, and
/// how many processes it may have. `jobfarm worker --pool NAME` runs one process of a pool; `jobfarm supervise` runs
/// them all.
public struct PoolsConfiguration: Sendable, Equatable {
    /// The pools in file order.
    public var pools: [PoolConfiguration]
    /// The file the pools were read from (in error messages and for child processes).
    public var path: String

    /// The pool named `name`, or an error listing the names the file has.
    public func pool(named name: String) throws -> PoolConfiguration {
        guard let pool = pools.first(where: { $0.name == name }) else {
            throw PoolsConfigurationError(
                path: path, line: nil, key: "pools",
                message: "has no pool named '\(name)'; the pools are: \(pools.map(\.name).joined(separator: ", "))")
        }
        return pool
    }

    /// Reads and checks a file. `tiers` are the farm's tiers (what `queue:tier+tier` may name); `mlQueues` the
    /// queues ML jobs go to (a pool serving one gets process bounds that do not oversubscribe `cores`).
    public static func load(
        path: String, tiers: [String] = ["premium", "standard", "free"], mlQueues: [String] = ["ml"],
        cores: Int = ProcessInfo.processInfo.activeProcessorCount
    ) throws -> PoolsConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw PoolsConfigurationError(
                path: path, line: nil, key: nil,
                message: "cannot be read; check the path (--config, or $JOBFARM_WORKERS_CONFIG)")
        }
        return try parse(String(decoding: data, as: UTF8.self), path: path, tiers: tiers, mlQueues: mlQueues, cores: cores)
    }

    /// Parses the text of a `workers.yaml`; `path` names it in errors.
    public static func parse(
        _ text: String, path: String = "workers.yaml", tiers: [String] = ["premium", "standard", "free"],
        mlQueues: [String] = ["ml"], cores: Int = ProcessInfo.processInfo.activeProcessorCount
    ) throws -> PoolsConfiguration {
        let reader = PoolsFileReader(path: path, tiers: tiers, mlQueues: mlQueues, cores: max(1, cores))
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw reader.syntaxError(error)
        }
        guard let root else {
            throw PoolsConfigurationError(path: path, line: 1, key: nil, message: "is empty; it needs `pools:` with at least one pool")
        }
        return try reader.read(root)
    }
}

/// One pool: a kind of worker process and how many of them run.
public struct PoolConfiguration: Sendable, Equatable {
    /// The pool's name (`jobfarm worker --pool NAME`).
    public var name: String
    /// The `queues` text as written (`default,ml:premium+standard`, `*`).
    public var queuesText: String
    /// Queues in preference order; nil: every queue.
    public var queues: [String]?
    /// The tiers a queue is served for, where the spec limits them (`queue:tier+tier`).
    public var tiersByQueue: [String: [String]]
    /// The tier policy text (`strict:aging=10s`, `weighted:premium=6,standard=3,free=1`); nil: the command's.
    public var tierPolicy: String?
    /// Jobs run at once per process.
    public var concurrency: Int
    /// Most jobs leased per fetch.
    public var fetchBatch: Int
    /// Seconds running jobs get to finish when a process is stopped.
    public var shutdownGraceSeconds: Double
    /// OpenBLAS threads per process (ML kinds); nil: the worker chooses.
    public var blasThreads: Int?
    /// Compute threads per process (ML kinds); nil: the worker chooses.
    public var computeThreads: Int?
    /// Most `inference` requests in one batch; nil: the worker's default.
    public var maxBatch: Int?
    /// Longest wait for a batch to fill, in milliseconds (0 turns batching off); nil: the worker's default.
    public var maxBatchDelayMilliseconds: Double?
    /// Fewest processes (what `jobfarm supervise` runs).
    public var minProcesses: Int
    /// Most processes (the bound a scaler may go up to).
    public var maxProcesses: Int
    /// Whether the pool serves a queue ML jobs are sent to.
    public var servesMLQueue: Bool
    /// The first port of the pool's `/metrics` endpoints: `jobfarm supervise` gives its N-th process port
    /// `metricsPortBase + N - 1` (`jobfarm worker --metrics-port`); nil: no process metrics.
    public var metricsPortBase: Int? = nil

    /// The autoscaling targets (`autoscale:`); the defaults when the pool has none.
    public var autoscale = AutoscaleSettings()

    /// Per kind, what replaces the handler's retry policy in this pool's processes (`retry:`); a kind not named keeps
    /// its handler's policy.
    public var retryOverrides: [String: RetryOverride] = [:]
    /// Per kind, the longest an attempt may run in this pool's processes (`timeouts:`): a job's own timeout is
    /// lowered to it, never raised.
    public var timeoutCaps: [String: TimeoutCap] = [:]

    /// Whether a scaler may change the pool's process count (`min` < `max`).
    public var isAutoscaled: Bool { minProcesses < maxProcesses }
}

/// A mistake in `workers.yaml`: the file, line and key, and what is allowed.
public struct PoolsConfigurationError: Error, CustomStringConvertible, Equatable {
    /// The file.
    public var path: String
    /// The 1-based line, when known.
    public var line: Int?
    /// The key path (`pools[1].concurrency`), when the mistake is in one.
    public var key: String?
    /// What is wrong and what is allowed.
    public var message: String

    /// A mistake at `path`:`line`, in `key`.
    public init(path: String, line: Int?, key: String?, message: String) {
        self.path = path
        self.line = line
        self.key = key
        self.message = message
    }

    public var description: String {
        var text = path
        if let line { text += ":\(line)" }
        if let key { text += ": \(key)" }
        return text + " " + message
    }
}

/// Walks the node tree, checking each key against what is allowed.
struct PoolsFileReader {
    let path: String
    let tiers: [String]
    let mlQueues: [String]
    let cores: Int

    static let poolKeys = [
        "name", "queues", "tier_policy", "concurrency", "fetch_batch", "shutdown_grace", "blas_threads",
        "compute_threads", "batching", "processes", "metrics_port_base", "autoscale", "retry", "timeouts",
    ]
    static let autoscaleKeys = [
        "target_wait", "scale_up_cooldown", "scale_down_window", "interval", "service_time", "target_utilisation",
    ]

    func error(_ node: Node?, _ key: String?, _ message: String) -> PoolsConfigurationError {
        PoolsConfigurationError(path: path, line: node?.mark?.line, key: key, message: message)
    }

    func syntaxError(_ error: YamlError) -> PoolsConfigurationError {
        switch error {
        case .scanner(let context, let problem, let mark, _):
            // `queues: *` is read as an alias.
            let hint = context?.text.contains("alias") == true ? "; quote a lone *: queues: \"*\"" : ""
            return PoolsConfigurationError(path: path, line: mark.line, key: nil, message: "is not valid YAML: \(problem)\(hint)")
        case .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
            return PoolsConfigurationError(path: path, line: mark.line, key: nil, message: "is not valid YAML: \(problem)")
        case .duplicatedKeysInMapping(let duplicates, let context):
            return PoolsConfigurationError(
                path: path, line: context.mark.line, key: duplicates.joined(separator: ", "),
                message: "appears twice in one mapping; keep one")
        default:
            return PoolsConfigurationError(path: path, line: nil, key: nil, message: "is not valid YAML: \(error)")
        }
    }

    /// The members of a mapping, each key checked against `allowed`.
    func members(_ node: Node, _ key: String, allowed: [String]) throws -> [(String, Node)] {
        guard let mapping = node.mapping else {
            throw error(node, key, "must be a mapping with the keys \(allowed.joined(separator: ", "))")
        }
        var result: [(String, Node)] = []
        for (name, value) in mapping {
            guard let text = name.string, allowed.contains(text) else {
                let child = key.isEmpty ? (name.string ?? "?") : "\(key).\(name.string ?? "?")"
                throw error(name, child, "is not a known key; allowed here: \(allowed.joined(separator: ", "))")
            }
            guard !result.contains(where: { $0.0 == text }) else {
                throw error(name, key.isEmpty ? text : "\(key).\(text)", "appears twice in one mapping; keep one")
            }
            result.append((text, value))
        }
        return result
    }

    func integer(_ node: Node, _ key: String, atLeast minimum: Int) throws -> Int {
        guard node.scalar != nil, let value = node.int, value >= minimum else {
            throw error(node, key, "must be a whole number ≥ \(minimum) (found '\(node.string ?? kind(node))')")
        }
        return value
    }

    func number(_ node: Node, _ key: String, atLeast minimum: Double) throws -> Double {
        guard node.scalar != nil, let value = node.float, value.isFinite, value >= minimum else {
            throw error(node, key, "must be a number ≥ \(minimum == minimum.rounded() ? "\(Int(minimum))" : "\(minimum)") (found '\(node.string ?? kind(node))')")
        }
        return value
    }

    func string(_ node: Node, _ key: String, _ allowed: String) throws -> String {
        guard node.scalar != nil, let text = node.string, !text.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw error(node, key, "must be \(allowed) (found \(kind(node)))")
        }
        return text.trimmingCharacters(in: .whitespaces)
    }

    func kind(_ node: Node) -> String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .scalar: return "an empty value"
        case .alias: return "an alias"
        }
    }

    func read(_ root: Node) throws -> PoolsConfiguration {
        var poolsNode: Node?
        for (key, value) in try members(root, "", allowed: ["pools"]) where key == "pools" { poolsNode = value }
        guard let poolsNode else { throw error(root, "pools", "is missing; list the pools under `pools:`") }
        guard let items = poolsNode.sequence, !items.isEmpty else {
            throw error(poolsNode, "pools", "must be a list of pools (`- name: general`), at least one")
        }
        var pools: [PoolConfiguration] = []
        for (index, item) in items.enumerated() {
            let pool = try readPool(item, key: "pools[\(index)]")
            if pools.contains(where: { $0.name == pool.name }) {
                throw error(item, "pools[\(index)].name", "'\(pool.name)' is used by an earlier pool; pool names must differ")
            }
            if let base = pool.metricsPortBase,
               let other = pools.first(where: { other in other.metricsPortBase.map { base < $0 + other.maxProcesses && $0 < base + pool.maxProcesses } ?? false }) {
                throw error(item, "pools[\(index)].metrics_port_base", "is \(base): ports \(base)…\(base + pool.maxProcesses - 1) overlap pool \(other.name)'s \(other.metricsPortBase!)…\(other.metricsPortBase! + other.maxProcesses - 1); give each pool its own range")
            }
            pools.append(pool)
        }
        return PoolsConfiguration(pools: pools, path: path)
    }

    func readPool(_ node: Node, key: String) throws -> PoolConfiguration {
        var pool = PoolConfiguration(
            name: "", queuesText: "*", queues: nil, tiersByQueue: [:], tierPolicy: nil, concurrency: 10, fetchBatch: 100,
            shutdownGraceSeconds: 25, blasThreads: nil, computeThreads: nil, maxBatch: nil, maxBatchDelayMilliseconds: nil,
            minProcesses: 1, maxProcesses: 10, servesMLQueue: false)
        var processesNode: Node?
        var named = false
        for (name, value) in try members(node, key, allowed: Self.poolKeys) {
            let child = "\(key).\(name)"
            switch name {
            case "name":
                pool.name = try string(value, child, "a pool name (letters, digits, - and _)")
                guard pool.name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
                    throw error(value, child, "'\(pool.name)' may hold only letters, digits, - and _")
                }
                named = true
            case "queues":
                pool.queuesText = try string(value, child, "queues in preference order: default,ml:premium+standard or *")
                try readQueues(&pool, value, child)
            case "tier_policy":
                let text = try string(value, child, "strict, strict:aging=10s or weighted:premium=6,standard=3,free=1")
                do {
                    _ = try TierPolicy(parsing: text)
                } catch {
                    throw self.error(value, child, "'\(text)' is not a tier policy: \(error); allowed: strict, strict:aging=10s[,share=5], weighted:premium=6,standard=3,free=1")
                }
                pool.tierPolicy = text
            case "concurrency": pool.concurrency = try integer(value, child, atLeast: 1)
            case "fetch_batch": pool.fetchBatch = try integer(value, child, atLeast: 1)
            case "shutdown_grace": pool.shutdownGraceSeconds = try number(value, child, atLeast: 0)
            case "blas_threads": pool.blasThreads = try integer(value, child, atLeast: 1)
            case "compute_threads": pool.computeThreads = try integer(value, child, atLeast: 1)
            case "batching":
                for (batchKey, batchValue) in try members(value, child, allowed: ["max_batch", "max_delay_ms"]) {
                    if batchKey == "max_batch" {
                        pool.maxBatch = try integer(batchValue, "\(child).max_batch", atLeast: 1)
                    } else {
                        pool.maxBatchDelayMilliseconds = try number(batchValue, "\(child).max_delay_ms", atLeast: 0)
                    }
                }
            case "processes": processesNode = value
            case "metrics_port_base": pool.metricsPortBase = try integer(value, child, atLeast: 1)
            case "autoscale": pool.autoscale = try readAutoscale(value, key: child)
            case "retry": pool.retryOverrides = try readRetry(value, key: child)
            case "timeouts": pool.timeoutCaps = try readTimeouts(value, key: child)
            default: break
            }
        }
        guard named else { throw error(node, "\(key).name", "is missing; every pool needs a name") }
        pool.servesMLQueue = pool.queues.map { $0.contains(where: { mlQueues.contains($0) || mlQueues.contains("*") }) } ?? true
        try readProcesses(&pool, processesNode, key: "\(key).processes")
        if let base = pool.metricsPortBase, base + pool.maxProcesses - 1 > 65535 {
            throw error(node, "\(key).metrics_port_base", "is \(base): its \(pool.maxProcesses) processes need ports up to \(base + pool.maxProcesses - 1); allowed: 1…\(65536 - pool.maxProcesses)")
        }
        return pool
    }

    /// Today's `--queues` syntax: `queue[:tier+tier],…` or `*`.
    func readQueues(_ pool: inout PoolConfiguration, _ node: Node, _ key: String) throws {
        if pool.queuesText == "*" {
            pool.queues = nil
            return
        }
        var names: [String] = []
        var tiersByQueue: [String: [String]] = [:]
        for item in pool.queuesText.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.trimmingCharacters(in: .whitespaces).split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            let queue = parts[0]
            guard !queue.isEmpty, !queue.contains(where: { $0.isWhitespace || $0 == "*" || $0 == "{" || $0 == "}" }) else {
                throw error(node, key, "'\(pool.queuesText)': '\(item)' is not a queue; write queue names separated by commas (default,ml:premium+standard) or * for every queue")
            }
            guard !names.contains(queue) else {
                throw error(node, key, "'\(pool.queuesText)' names queue '\(queue)' twice")
            }
            names.append(queue)
            if parts.count == 2 {
                let list = parts[1].split(separator: "+", omittingEmptySubsequences: false).map(String.init)
                for tier in list where !tiers.contains(tier) {
                    throw error(node, key, "'\(pool.queuesText)': tier '\(tier)' of queue '\(queue)' is not one of \(tiers.joined(separator: ", "))")
                }
                tiersByQueue[queue] = list
            }
        }
        pool.queues = names
        pool.tiersByQueue = tiersByQueue
    }

    /// `autoscale: {target_wait: {premium: 1, …}, scale_up_cooldown: 30, …}`: seconds, each key optional.
    func readAutoscale(_ node: Node, key: String) throws -> AutoscaleSettings {
        var settings = AutoscaleSettings()
        for (name, value) in try members(node, key, allowed: Self.autoscaleKeys) {
            let child = "\(key).\(name)"
            switch name {
            case "target_wait":
                for (tier, seconds) in try members(value, child, allowed: tiers) {
                    let wait = try number(seconds, "\(child).\(tier)", atLeast: 0)
                    guard wait > 0 else { throw error(seconds, "\(child).\(tier)", "must be above 0 seconds (found 0)") }
                    settings.targetWaitSeconds[tier] = wait
                }
            case "scale_up_cooldown": settings.scaleUpCooldownSeconds = try number(value, child, atLeast: 0)
            case "scale_down_window": settings.scaleDownWindowSeconds = try number(value, child, atLeast: 0)
            case "interval":
                settings.intervalSeconds = try number(value, child, atLeast: 0.1)
            case "service_time":
                settings.serviceTimeSeconds = try number(value, child, atLeast: 0.001)
            case "target_utilisation":
                let share = try number(value, child, atLeast: 0.05)
                guard share <= 1 else { throw error(value, child, "must be a share of the slots from 0.05 to 1 (found \(share))") }
                settings.targetUtilisation = share
            default: break
            }
        }
        return settings
    }

    /// `processes: N` (exactly N), or `processes: {min: A, max: B}` with defaults.
    func readProcesses(_ pool: inout PoolConfiguration, _ node: Node?, key: String) throws {
        // An ML process uses blas × compute threads; more processes than fit the cores only queue on them.
        // (The same defaults as MLJobOptions: BLAS 1 thread when concurrency > 1, compute threads cores / BLAS.)
        let blas = pool.blasThreads ?? (pool.concurrency > 1 ? 1 : cores)
        let perProcessThreads = max(1, blas * (pool.computeThreads ?? max(1, cores / blas)))
        let defaultMax = pool.servesMLQueue ? max(1, cores / perProcessThreads) : 10
        guard let node else {
            pool.minProcesses = min(2, defaultMax)
            pool.maxProcesses = defaultMax
            return
        }
        if node.scalar != nil {
            let count = try integer(node, key, atLeast: 1)
            pool.minProcesses = count
            pool.maxProcesses = count
            return
        }
        var minimum: Int?
        var maximum: Int?
        for (name, value) in try members(node, key, allowed: ["min", "max"]) {
            if name == "min" { minimum = try integer(value, "\(key).min", atLeast: 0) }
            if name == "max" { maximum = try integer(value, "\(key).max", atLeast: 1) }
        }
        if let minimum, let maximum, minimum > maximum {
            throw error(node, key, "min (\(minimum)) is above max (\(maximum)); min must be ≤ max")
        }
        pool.minProcesses = minimum ?? min(2, maximum ?? defaultMax)
        pool.maxProcesses = maximum ?? max(defaultMax, pool.minProcesses)
    }
}
