import ArgumentParser
import Foundation
import JobProtocol
import JobQueue
import Logging
import RedisClient

@main
struct JobFarmCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "jobfarm",
        abstract: "A Redis job-queue worker farm: enqueue jobs, run workers, inspect queues and dead letters.",
        discussion: """
            Redis: --redis-url, else $JOBFARM_REDIS_URL, else the managed local Redis that scripts/up starts \
            (\(GlobalOptions.managedRedisURL)).
            """,
        version: JobFarmVersion.current,
        subcommands: [
            EnqueueCommand.self, WorkerCommand.self, StatusCommand.self, CancelCommand.self, StatsCommand.self,
            DeadLetterCommand.self, WorkersCommand.self, SuperviseCommand.self, BenchCommand.self,
            ModelCommand.self, DatasetCommand.self, BLASProbeCommand.self, ServeCommand.self, APIKeyCommand.self,
            PipelineCommand.self, ScheduleCommand.self, AutoscaleCommand.self, BatchCommand.self,
            QueueCommand.self, ExporterCommand.self, ClusterCommand.self,
        ]
    )

    /// Runs the command; a `CLIError` exits with its own status (`EX_CONFIG` for a Redis URL, password or database
    /// that must change), everything else with ArgumentParser's message and status.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var command = command as? AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch let error as CLIError {
            FileHandle.standardError.write(Data("Error: \(error.message)\n".utf8))
            finish(error.exitCode)
        } catch {
            let message = fullMessage(for: error)
            let code = exitCode(for: error)
            if !message.isEmpty {
                if code == .success {
                    print(message)
                } else {
                    FileHandle.standardError.write(Data((message + "\n").utf8))
                }
            }
            finish(code.rawValue)
        }
        finish(0)
    }

    /// Ends the process without running the libraries' destructors, once stdio is flushed. OpenBLAS 0.3.21's
    /// destructor joins its helper threads and can wait forever for one that a signal did not wake (seen as a worker
    /// that logged its shutdown and never exited, its main thread in `blas_thread_shutdown_`); nothing of this
    /// program needs a destructor at exit: connections are closed, files synced and logs written by then.
    static func finish(_ status: Int32) -> Never {
        fflush(nil)
        _exit(status)
    }
}

/// Options every subcommand takes.
struct GlobalOptions: ParsableArguments {
    static let managedRedisURL = "redis://127.0.0.1:6380"

    @Option(name: .long, help: "Redis URL: redis://[user:pass@]host:port/db or unix:///path.sock (default: $JOBFARM_REDIS_URL, else \(managedRedisURL)).")
    var redisURL: String?

    @Option(name: .long, help: "Key namespace (default: $JOBFARM_NAMESPACE, else jf).")
    var namespace: String?

    @Option(name: .long, help: "Tiers, highest first (default: premium,standard,free).")
    var tiers: String = "premium,standard,free"

    static let defaultTierPolicy = "strict:aging=10s"

    @Option(name: .long, help: "Tier policy: strict, strict:aging=10s (aged tiers get one job in 10 fetched; strict:aging=10s,share=5 for one in 5), or weighted:premium=6,standard=3,free=1 (default: the pool's tier_policy with --pool, else \(defaultTierPolicy)).")
    var tierPolicy: String?

    @Option(name: .long, parsing: .unconditional, help: "Lease length in seconds (a worker that stops heartbeating loses its jobs after this).")
    var lease: Double = 10

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = ProcessInfo.processInfo.environment["JOBFARM_LOG_LEVEL"] ?? "info"

    var resolvedRedisURL: String {
        redisURL ?? ProcessInfo.processInfo.environment["JOBFARM_REDIS_URL"] ?? Self.managedRedisURL
    }

    /// Checks the URL, tiers, tier policy and lease before any command runs, so that a mistake is reported with
    /// the command's own usage.
    func validate() throws {
        _ = try farmConfiguration()
    }

    /// The farm's configuration; `poolTierPolicy` (a pool's `tier_policy`) applies when `--tier-policy` is not given.
    func farmConfiguration(poolTierPolicy: String? = nil) throws -> JobFarmConfiguration {
        try OptionCheck.seconds(lease, "--lease", atLeast: 1)
        let redis: RedisConfiguration
        do {
            redis = try RedisConfiguration(url: resolvedRedisURL)
        } catch {
            let source = redisURL != nil ? "--redis-url" : "JOBFARM_REDIS_URL"
            throw ValidationError("\(source): \(error)")
        }
        let tierList = tiers.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
        let leaseDuration = Duration.milliseconds(Int64(lease * 1000))
        var configuration = JobFarmConfiguration(
            redis: redis, namespace: namespace ?? ProcessInfo.processInfo.environment["JOBFARM_NAMESPACE"] ?? "jf",
            tiers: tierList, defaultTier: tierList.contains("standard") ? "standard" : tierList.first ?? "standard",
            leaseDuration: leaseDuration, heartbeatInterval: leaseDuration / 5)
        do {
            configuration.tierPolicy = try TierPolicy(parsing: tierPolicy ?? poolTierPolicy ?? Self.defaultTierPolicy)
            try configuration.validate()
        } catch {
            throw ValidationError("\(error)")
        }
        return configuration
    }

    func makeFarm(poolTierPolicy: String? = nil) throws -> JobFarm {
        bootstrapLogging()
        return try JobFarm(configuration: farmConfiguration(poolTierPolicy: poolTierPolicy), logger: Logger(label: "jobfarm"))
    }

    func bootstrapLogging() {
        let level = Logger.Level(rawValue: logLevel.lowercased()) ?? .info
        LoggingBootstrap.once(level: level)
    }
}

/// Installs the stderr log handler once per process.
enum LoggingBootstrap {
    nonisolated(unsafe) private static var done = false  // set once from the main task before any concurrency
    static func once(level: Logger.Level) {
        if done { return }
        done = true
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

/// Turns library errors into messages that say what to do next, and exits non-zero.
func reportingErrors<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as JobFarmError {
        throw CLIError(error)
    } catch let error as RedisError {
        throw CLIError(error)
    }
}

/// An error the CLI reports as it is: its message, and the exit status.
struct CLIError: Error, CustomStringConvertible {
    /// `EX_CONFIG` (sysexits.h): the Redis URL, password, user or database must change; restarting will not help.
    static let configurationExitCode: Int32 = 78

    var message: String
    var exitCode: Int32 = 1
    var description: String { message }

    init(message: String, exitCode: Int32 = 1) {
        self.message = message
        self.exitCode = exitCode
    }

    init(_ error: JobFarmError) {
        self.init(message: "\(error)", exitCode: error.isConfigurationError ? Self.configurationExitCode : 1)
    }

    init(_ error: RedisError) {
        self.init(message: "\(error)", exitCode: error.isConfigurationError ? Self.configurationExitCode : 1)
    }
}

extension CLIError: LocalizedError {
    var errorDescription: String? { description }
}

/// Reads `--payload`: inline JSON, `@file`, or `@-` for standard input.
func readPayload(_ text: String?) throws -> JSONValue {
    guard let text else { return .null }
    var source = text
    if text.hasPrefix("@") {
        let path = String(text.dropFirst())
        if path == "-" {
            source = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        } else {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ValidationError("--payload \(text): cannot read file '\(path)'; check the path")
            }
            source = String(decoding: data, as: UTF8.self)
        }
    }
    do {
        return try JSONValue(parsing: source)
    } catch {
        throw ValidationError("--payload is not valid JSON (\(describeJSONError(error))); quote it for the shell, e.g. --payload '{\"seconds\": 2}'")
    }
}

func describeJSONError(_ error: Error) -> String {
    if case DecodingError.dataCorrupted(let context) = error {
        return (context.underlyingError as NSError?)?.userInfo[NSDebugDescriptionErrorKey] as? String ?? context.debugDescription
    }
    return "\(error)"
}

/// Prints a JSON value, pretty.
func printJSON(_ value: JSONValue) {
    let data = (try? JSONSerialization.data(withJSONObject: value.foundationObject, options: [.prettyPrinted, .sortedKeys, .fragmentsAllowed])) ?? Data(value.jsonText.utf8)
    print(String(decoding: data, as: UTF8.self))
}

extension JSONValue {
    var foundationObject: Any {
        switch self {
        case .null: return NSNull()
        case .bool(let value): return value
        case .number(let value): return value == value.rounded() && abs(value) < 1e15 ? Int64(value) as Any : value
        case .string(let value): return value
        case .array(let items): return items.map(\.foundationObject)
        case .object(let members): return members.mapValues(\.foundationObject)
        }
    }
}

/// `1.2 s`, `35 ms`, `3 min` for people.
func human(_ duration: Duration) -> String {
    let seconds = duration.seconds
    if seconds < 1 { return String(format: "%.0f ms", seconds * 1000) }
    if seconds < 120 { return String(format: "%.1f s", seconds) }
    if seconds < 7200 { return String(format: "%.0f min", seconds / 60) }
    return String(format: "%.1f h", seconds / 3600)
}

/// A time in ms since 1970 as ISO 8601.
func isoTime(_ milliseconds: Int64?) -> String {
    guard let milliseconds else { return "-" }
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.string(from: Date(timeIntervalSince1970: Double(milliseconds) / 1000))
}
