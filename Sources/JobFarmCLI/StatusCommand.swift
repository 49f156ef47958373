import ArgumentParser
import Foundation
import JobProtocol
import JobQueue

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show a job's status; --wait follows it to the end.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "Job id.") var id: String
    @Option(help: "Queue of the job (default: search every queue).") var queue: String?
    @Flag(help: "Wait until the job is final, with a progress bar.") var wait = false
    @Option(parsing: .unconditional, help: "Seconds to wait at most.") var timeout: Double = 3600
    @Flag(help: "Print JSON.") var json = false
    @Flag(help: "Print the whole result (by default a long result is cut at 800 characters; --json prints it whole too).") var fullResult = false

    func validate() throws {
        try OptionCheck.seconds(timeout, "--timeout", positive: true)
    }

    func run() async throws {
        let farm = try global.makeFarm()
        if !wait {
            guard let status = try await reportingErrors({ try await farm.status(id: id, queue: queue) }) else {
                throw CLIError(message: "no job \(id): never enqueued, or expired after the retention period. List queues with `jobfarm stats`.")
            }
            if json { printJSON(status.json) } else { printStatus(status) }
            return
        }
        let interactive = isatty(STDERR_FILENO) == 1
        let status = try await reportingErrors {
            try await farm.wait(for: id, queue: queue, timeout: .milliseconds(Int64(timeout * 1000))) { status in
                guard interactive, !status.state.isTerminal else { return }
                let fraction = status.progress ?? 0
                let bar = ProgressLine.bar(filled: Int(fraction * 30))
                FileHandle.standardError.write(Data("\r\(status.state.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)) \(bar) \(Int(fraction * 100))%  ".utf8))
            }
        }
        if interactive { ProgressLine.clear() }
        if json { printJSON(status.json) } else { printStatus(status) }
        if status.state != .succeeded { throw ExitCode(2) }
    }

    private func printStatus(_ status: JobStatus) {
        print("id:        \(status.id)")
        print("queue:     \(status.queue) / \(status.tier ?? "-")")
        print("kind:      \(status.kind ?? "-")")
        print("state:     \(status.state.rawValue)\(status.cancelRequested ? " (cancel requested)" : "")")
        print("attempts:  \(status.attempts)\(status.maxAttempts.map { " of \($0)" } ?? "")\(status.leaseLosses > 0 ? ", leases lost: \(status.leaseLosses)" : "")")
        print("enqueued:  \(isoTime(status.enqueuedAt))")
        if status.runAt != nil { print("run at:    \(isoTime(status.runAt))") }
        print("started:   \(isoTime(status.startedAt))")
        print("finished:  \(isoTime(status.finishedAt))")
        if let progress = status.progress { print("progress:  \(Int(progress * 100))%") }
        if let worker = status.worker { print("worker:    \(worker)") }
        if let result = status.result {
            let text = result.jsonText
            if fullResult || text.count <= 800 {
                print("result:    \(text)")
            } else {
                print("result:    \(text.prefix(800))…")
                print("           (\(text.utf8.count) bytes in all: `jobfarm status \(id) --full-result` or `--json` prints it whole)")
            }
        }
        if let error = status.error { print("error:     \(error)") }
        if let reason = status.reason { print("reason:    \(reason)") }
        for record in status.history {
            print("  attempt \(record.attempt ?? 0) at \(isoTime(record.at)): \(record.outcome ?? "?") — \(record.error ?? "")")
        }
    }
}

struct CancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cancel", abstract: "Cancel a pending or running job.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "Job id.") var id: String
    @Option(help: "Queue of the job (default: search every queue).") var queue: String?
    @Flag(help: "Keep the job as a dead letter (reason: cancelled) so it can be requeued later.") var deadLetter = false

    func run() async throws {
        let farm = try global.makeFarm()
        let outcome = try await reportingErrors { try await farm.cancel(id: id, queue: queue, keepAsDeadLetter: deadLetter) }
        switch outcome {
        case .cancelled: print("cancelled \(id)")
        case .cancelling: print("cancelling \(id): it is running; its worker stops it at the next heartbeat (`jobfarm status \(id) --wait` to follow)")
        case .alreadyFinished: print("\(id) had already finished; nothing to cancel")
        case .notFound: throw CLIError(message: "no job \(id); check the id, or pass --queue")
        }
    }
}

struct StatsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stats", abstract: "Per queue and tier: depth, oldest age; per queue in flight, delayed, retrying, due now, dead.")

    @OptionGroup var global: GlobalOptions
    @Option(help: "Only these queues (comma-separated).") var queues: String?
    @Flag(help: "Print JSON (what an autoscaler reads).") var json = false

    func run() async throws {
        let farm = try global.makeFarm()
        let names = queues.map { $0.split(separator: ",").map(String.init) }
        let all = try await reportingErrors { try await farm.stats(queues: names) }
        if json {
            printJSON(.array(all.map { stats in
                .object([
                    "queue": .string(stats.queue), "depth": .number(Double(stats.depth)),
                    "inflight": .number(Double(stats.inflight)), "scheduled": .number(Double(stats.scheduled)),
                    "delayed": .number(Double(stats.delayed)), "retrying": .number(Double(stats.retrying)),
                    "due": .number(Double(stats.dueNow)),
                    "dead": .number(Double(stats.dead)),
                    "oldest_age_ms": stats.oldestAge.map { .number(Double($0.milliseconds)) } ?? .null,
                    "tiers": .array(stats.tiers.map { tier in
                        .object(["tier": .string(tier.name), "depth": .number(Double(tier.depth)),
                                 "oldest_age_ms": tier.oldestAge.map { .number(Double($0.milliseconds)) } ?? .null])
                    }),
                    "counters": .object(stats.counters.mapValues { .number(Double($0)) }),
                ])
            }))
            return
        }
        if all.isEmpty {
            print("no queues yet: enqueue a job with `jobfarm enqueue --kind echo --payload '{\"hello\":1}'`")
            return
        }
        let header = ["queue", "tier", "depth", "oldest", "in-flight", "delayed", "retrying", "due", "dead", "succeeded", "retried"]
        var rows: [[String]] = []
        for stats in all {
            let estimate = stats.retryingIsExact ? "" : "~"
            rows.append([stats.queue, "*", "\(stats.depth)", stats.oldestAge.map(human) ?? "-", "\(stats.inflight)", "\(estimate)\(stats.delayed)",
                         "\(estimate)\(stats.retrying)", "\(stats.dueNow)",
                         "\(stats.dead)", "\(stats.counters["succeeded"] ?? 0)", "\(stats.counters["retried"] ?? 0)"])
            for tier in stats.tiers {
                rows.append(["", tier.name, "\(tier.depth)", tier.oldestAge.map(human) ?? "-", "", "", "", "", "", "", ""])
            }
        }
        if all.contains(where: { !$0.retryingIsExact }) {
            print("(~: estimated from 10,000 scheduled jobs drawn at random)")
        }
        printTable(header: header, rows: rows)
    }
}

/// Prints rows under a header, columns aligned.
func printTable(header: [String], rows: [[String]]) {
    var widths = header.map(\.count)
    for row in rows { for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { index, cell in cell.padding(toLength: widths[index], withPad: " ", startingAt: 0) }.joined(separator: "  ")
    }
    print(line(header))
    for row in rows { print(line(row)) }
}
