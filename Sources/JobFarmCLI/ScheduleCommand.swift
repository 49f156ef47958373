import ArgumentParser
import Foundation
import Pipelines

struct ScheduleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schedule", abstract: "Cron schedules (docs/PIPELINES.md, \"Schedules\").",
        subcommands: [
            ScheduleNextCommand.self, ScheduleValidateCommand.self,
            ScheduleAddCommand.self, ScheduleListCommand.self, ScheduleRemoveCommand.self, ScheduleSyncCommand.self,
        ])
}

struct ScheduleNextCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "next",
        abstract: "Print the next firings of a cron expression (5 fields or @daily-style), in its time zone and in UTC.")

    @Argument(help: "Cron expression, quoted: \"0 2 * * *\", \"*/15 9-17 * * mon-fri\", \"@hourly\".") var expression: String
    @Option(name: .customLong("tz"), help: "IANA time zone (default UTC), e.g. Europe/Berlin.") var timeZone: String = "UTC"
    @Option(parsing: .unconditional, help: "How many firings.") var count: Int = 5
    @Option(help: "Start after this time (ISO 8601, e.g. 2026-03-28T12:00:00Z; default now).") var after: String?

    func validate() throws {
        try OptionCheck.integer(count, "--count", atLeast: 1, atMost: 1000)
    }

    func run() throws {
        let cron: CronExpression
        do {
            cron = try CronExpression(parsing: expression)
        } catch {
            throw ValidationError("\(expression): \(error)")
        }
        guard let zone = CronExpression.timeZone(named: timeZone) else {
            throw ValidationError("--tz \(timeZone) is not a time zone of the IANA database (e.g. UTC, Europe/Berlin, America/New_York)")
        }
        var start = Date()
        if let after {
            guard let parsed = ISO8601DateFormatter().date(from: after) else {
                throw ValidationError("--after \(after) is not an ISO 8601 time such as 2026-03-28T12:00:00Z")
            }
            start = parsed
        }
        let firings = cron.firings(after: start, in: zone, count: count)
        if firings.isEmpty { print("\"\(expression)\" never fires (no such date within ten years)") }
        for firing in firings { print(FiringFormat.text(firing, zone: zone)) }
    }
}

struct ScheduleValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check a schedule file (jobs/schedules.yaml) and the pipeline files it names; prints each schedule's next firing.")

    @Argument(help: "Schedule files (YAML).") var files: [String]

    func run() throws {
        let known = FarmKinds.runnable.union(FarmKinds.planned)
        var failed = false
        for file in files {
            do throws(DefinitionErrors) {
                let schedules = try ScheduleFile.load(path: file, knownKinds: known)
                print("\(file): \(schedules.entries.count) schedule(s)")
                for entry in schedules.entries {
                    let next = entry.schedule.nextFiring(after: Date()).map { FiringFormat.text($0, zone: entry.schedule.timeZone) } ?? "never"
                    let target: String
                    switch entry.target {
                    case .pipeline(let path, _):
                        let resolved = URL(fileURLWithPath: file).deletingLastPathComponent().appendingPathComponent(path).path
                        do throws(DefinitionErrors) {
                            let pipeline = try ValidatedPipeline.load(path: resolved, knownKinds: known)
                            target = "pipeline \(pipeline.definition.name) (\(path))"
                        } catch {
                            failed = true
                            FileHandle.standardError.write(Data("\(entry.location): schedule `\(entry.name)` names \(path):\n\(error)\n".utf8))
                            continue
                        }
                    case .job(let kind, let queue, let tier, _):
                        target = "job \(kind) on \(queue)" + (tier.map { "/\($0)" } ?? "")
                    }
                    print("  \(entry.name): \"\(entry.schedule.cron)\" \(entry.schedule.timeZoneName), missed: \(entry.schedule.missed.rawValue) → \(target); next \(next)")
                }
            } catch {
                failed = true
                FileHandle.standardError.write(Data((error.description + "\n").utf8))
            }
        }
        if failed { throw ExitCode(1) }
    }
}
