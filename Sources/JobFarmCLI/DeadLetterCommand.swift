import ArgumentParser
import Foundation
import JobProtocol
import JobQueue

struct DeadLetterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq", abstract: "Inspect, requeue and purge dead letters.",
        subcommands: [List.self, Show.self, Requeue.self, Purge.self])

    /// Filters shared by list, requeue and purge.
    struct Filters: ParsableArguments {
        @Option(help: "Queue.") var queue: String = "default"
        @Option(help: "Only this reason: exhausted, non_retryable, malformed, timeout, poison, cancelled.") var reason: String?
        @Option(help: "Only this job kind.") var kind: String?
        @Option(help: "Only letters whose error contains this text.") var errorContains: String?
        @Option(parsing: .unconditional, help: "Only letters that died in the last N seconds.") var sinceSeconds: Double?
        @Option(parsing: .upToNextOption, help: "Only these ids.") var id: [String] = []

        var filter: DeadLetterFilter {
            DeadLetterFilter(
                reason: reason, kind: kind,
                since: sinceSeconds.map { WallClock.nowMilliseconds() - Int64($0 * 1000) },
                errorContains: errorContains, ids: id.isEmpty ? nil : Set(id))
        }

        func validate() throws {
            if let sinceSeconds { try OptionCheck.seconds(sinceSeconds, "--since-seconds", positive: true) }
            if let reason, DeadLetterReason(rawValue: reason) == nil {
                throw ValidationError("--reason \(reason) is unknown; use one of \(DeadLetterReason.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List dead letters, newest first.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var filters: Filters
        @Option(parsing: .unconditional, help: "Most letters shown.") var limit: Int = 50
        @Flag(help: "Print JSON.") var json = false

        func validate() throws {
            try OptionCheck.integer(limit, "--limit", atLeast: 1)
        }

        func run() async throws {
            let farm = try global.makeFarm()
            let letters = try await reportingErrors { try await farm.deadLetters(queue: filters.queue, filter: filters.filter, limit: limit) }
            if json {
                printJSON(.array(letters.map(\.json)))
                return
            }
            if letters.isEmpty {
                print("no dead letters in queue \(filters.queue) match")
                return
            }
            printTable(
                header: ["id", "reason", "kind", "attempts", "died", "error"],
                rows: letters.map { [$0.id, $0.reason, $0.kind ?? "-", "\($0.attempts)", isoTime($0.deadAt), String($0.error.prefix(70))] })
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one dead letter with its envelope and attempt history.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Dead letter (job) id.") var id: String
        @Option(help: "Queue.") var queue: String = "default"

        func run() async throws {
            let farm = try global.makeFarm()
            guard let letter = try await reportingErrors({ try await farm.deadLetter(id: id, queue: queue) }) else {
                throw CLIError(message: "no dead letter \(id) in queue \(queue); list them with `jobfarm dlq list --queue \(queue)`")
            }
            printJSON(letter.json)
        }
    }

    struct Requeue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Move dead letters back to their queue (attempts reset). Try --dry-run first.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var filters: Filters
        @Flag(help: "Requeue every letter matching the filters (without filters: all of them).") var all = false
        @Flag(help: "Only list what would be requeued.") var dryRun = false
        @Option(parsing: .unconditional, help: "At most this many letters per second.") var rate: Double?
        @Option(help: "Put them in this tier instead of their own.") var tier: String?
        @Option(help: "Replace the envelope of the single --id with this JSON (@file to read it).") var envelope: String?
        @Option(parsing: .unconditional, help: "Most letters requeued.") var limit: Int = .max

        func validate() throws {
            try OptionCheck.integer(limit, "--limit", atLeast: 1)
            if let rate { try OptionCheck.seconds(rate, "--rate", positive: true, unit: "letters per second") }
        }

        func run() async throws {
            guard all || !filters.id.isEmpty || filters.reason != nil || filters.kind != nil || filters.errorContains != nil else {
                throw ValidationError("name what to requeue: --id ID, a filter (--reason, --kind, --error-contains), or --all")
            }
            let farm = try global.makeFarm()
            if let envelope {
                guard filters.id.count == 1 else { throw ValidationError("--envelope needs exactly one --id") }
                let text = envelope.hasPrefix("@") ? (try? String(contentsOfFile: String(envelope.dropFirst()), encoding: .utf8)) ?? "" : envelope
                let outcome = try await reportingErrors { try await farm.requeue(id: filters.id[0], queue: filters.queue, editedEnvelope: text, tier: tier) }
                print(outcome == .requeued ? "requeued \(filters.id[0]) with the edited envelope" : "not requeued: \(outcome)")
                return
            }
            let report = try await reportingErrors {
                try await farm.requeueDeadLetters(queue: filters.queue, filter: filters.filter, limit: limit, tier: tier, dryRun: dryRun, ratePerSecond: rate)
            }
            let verb = dryRun ? "would requeue" : "requeued"
            print("\(verb) \(report.requeued.count) job(s)")
            for id in report.requeued { print("  \(id)") }
            if !report.malformed.isEmpty {
                print("\(report.malformed.count) letter(s) hold no runnable envelope (garbage pushed onto the queue); purge them, or requeue one with --id ID --envelope JSON:")
                for id in report.malformed { print("  \(id)") }
            }
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete dead letters for good (needs --yes; try --dry-run first).")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var filters: Filters
        @Flag(help: "Purge every letter matching the filters (without filters: all of them).") var all = false
        @Flag(help: "Only count what would be purged.") var dryRun = false
        @Flag(help: "Really delete.") var yes = false

        func run() async throws {
            guard all || !filters.id.isEmpty || filters.reason != nil || filters.kind != nil || filters.errorContains != nil || filters.sinceSeconds != nil else {
                throw ValidationError("name what to purge: --id ID, a filter (--reason, --kind, --error-contains, --since-seconds), or --all")
            }
            guard yes || dryRun else {
                throw ValidationError("purging deletes for good: run with --dry-run to see the count, then again with --yes")
            }
            let farm = try global.makeFarm()
            let count = try await reportingErrors { try await farm.purgeDeadLetters(queue: filters.queue, filter: filters.filter, dryRun: dryRun) }
            print(dryRun ? "would purge \(count) dead letter(s) from \(filters.queue)" : "purged \(count) dead letter(s) from \(filters.queue)")
        }
    }
}
