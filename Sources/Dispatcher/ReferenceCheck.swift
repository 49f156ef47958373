import Foundation
import Hummingbird
import JobProtocol
import JobQueue
import Logging
import ModelStore
import RedisClient
import Synchronization

/// The last validation layer at submission: the models and datasets a job names must exist, so a job naming a
/// model nobody pushed is refused with 422 (a pointer to the field) instead of failing on a worker later.
///
/// Checked: `inference`/`quantize` `model`; `validate` `candidate`, `sizeReference`, `reference` (unless a
/// `fallbackReference` stands in for it) and `dataset`; `batch_analysis`/`train` `dataset` (and `train`'s
/// `validationDataset`). Datasets only when written `farm:NAME` (a path is read from the worker's disk). A found
/// reference is remembered for a second (the model cache the Open Inference Protocol routes use). While Redis is away
/// (the circuit open, submissions spooled to the outbox) the check is skipped: the worker still refuses a missing
/// reference when the job runs.
extension Dispatcher {
    /// The references a job's payload names: pointer (under the payload), whether a model (else a dataset), text.
    static func references(kind: String, payload: JSONValue) -> [(pointer: String, model: Bool, text: String)] {
        func text(_ key: String) -> String? {
            if case .string(let value)? = payload[key], !value.isEmpty { return value }
            return nil
        }
        var found: [(pointer: String, model: Bool, text: String)] = []
        func model(_ key: String) { if let value = text(key) { found.append(("/" + key, true, value)) } }
        func dataset(_ key: String) {
            if let value = text(key), value.hasPrefix("farm:") { found.append(("/" + key, false, String(value.dropFirst(5)))) }
        }
        switch kind {
        case "inference", "quantize":
            model("model")
        case "validate":
            model("candidate")
            model("sizeReference")
            if text("fallbackReference") == nil { model("reference") }
            dataset("dataset")
        case "batch_analysis":
            dataset("dataset")
        case "train":
            dataset("dataset")
            dataset("validationDataset")
        default:
            break
        }
        return found
    }

    /// The problems of references that do not exist, for jobs given as (pointer of the job's payload, kind,
    /// payload). Empty while the circuit is open or when Redis fails meanwhile (the submission goes on as usual).
    func missingReferences(_ jobs: [(pointer: String, kind: String, payload: JSONValue)]) async -> [FieldProblem] {
        guard breaker.mayAllowCall else { return [] }
        let models = inferenceModels
        let logger = self.logger
        let check: @Sendable () async throws -> [FieldProblem] = {
            try await Self.missingReferences(jobs, models: models, logger: logger)
        }
        return (try? await withDeadline(breaker.settings.callTimeout, check)) ?? []
    }

    static func missingReferences(
        _ jobs: [(pointer: String, kind: String, payload: JSONValue)], models: InferenceModels, logger: Logger
    ) async throws -> [FieldProblem] {
        var problems: [FieldProblem] = []
        for job in jobs {
            for reference in Self.references(kind: job.kind, payload: job.payload) {
                let pointer = job.pointer + reference.pointer
                do {
                    if let missing = reference.model
                        ? try await models.missingModel(reference.text) : try await models.missingDataset(reference.text) {
                        problems.append(FieldProblem(pointer: pointer, missing))
                    }
                } catch {
                    logger.debug("reference check skipped", metadata: ["reference": "\(reference.text)", "error": "\(error)"])
                    return []
                }
            }
        }
        return problems
    }
}

extension InferenceModels {
    /// Why model reference `text` selects nothing, or `nil` when it selects a version (found versions cached for
    /// `ttl`, shared with the Open Inference Protocol routes).
    func missingModel(_ text: String) async throws -> String? {
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        do {
            _ = try await resolve(name: parts[0], version: parts.count > 1 ? parts[1] : nil)
            return nil
        } catch let problem as Problem where problem.status == .notFound || problem.status == .badRequest {
            return problem.status == .notFound
                ? "\(problem.detail): push it first (POST /v1/models) or name a model that exists (GET /v1/models)" : problem.detail
        }
    }

    /// Why dataset `name` (of `farm:NAME`) does not exist, or `nil` when it does (found names cached for `ttl`).
    func missingDataset(_ name: String) async throws -> String? {
        let now = ContinuousClock.now
        if let at = foundDatasets.withLock({ $0[name] }), now - at < ttl { return nil }
        guard isValidRegistryName(name) else {
            return "dataset name '\(name.prefix(70))' must be 1–64 of A–Z a–z 0–9 _ - ."
        }
        do {
            _ = try await datasets.record(name)
        } catch ModelStoreError.notFound(let message) {
            return "\(message); or push it with POST /v1/datasets?name=\(name)"
        } catch ModelStoreError.invalidArgument(let message) {
            return message
        } catch ModelStoreError.corrupt {
            // The record is there; reading it is the worker's business.
        }
        foundDatasets.withLock { cache in
            if cache.count > 10_000 { cache.removeAll() }
            cache[name] = now
        }
        return nil
    }

    /// Forgets what is known of dataset `name` (it was pushed again).
    func forgetDataset(_ name: String) {
        _ = foundDatasets.withLock { $0.removeValue(forKey: name) }
    }
}

extension Dispatcher {
    /// Each job of a bulk body with the pointer of its payload (`/jobs/<i>/payload`) and its kind.
    static func bulkPayloads(_ body: JSONValue, _ jobs: [EnqueueRequest]) -> [(pointer: String, kind: String, payload: JSONValue)] {
        guard case .array(let items)? = body["jobs"] else { return [] }
        return zip(items.indices, jobs).map { index, job in
            ("/jobs/\(index)/payload", job.kind, items[index]["payload"] ?? .null)
        }
    }
}
