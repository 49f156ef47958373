import Foundation
import JobProtocol
import JobQueue

/// Jobs belong to the tenant that submitted them: the dispatcher writes the tenant into each job's envelope
/// (`trace["tenant"]`, kept in the job hash or the `pending` entry, and in the outbox row while spooled), and a
/// tenant reads, waits for, streams and cancels only its own jobs. Another tenant's job, or one submitted without the
/// dispatcher (the CLI, the library), answers 404 as an unknown id would, so that its existence is not revealed.
/// Operator keys see every job.
extension Dispatcher {
    /// The envelope `trace` field that names the submitting tenant.
    public static let tenantTraceField = "tenant"

    /// `jobs` with the calling tenant recorded (no caller: as they are). Their `unique` keys are made the tenant's
    /// (`<tenant>:<key>`; tenant names hold no `:`), so that another tenant's key neither suppresses a job nor
    /// answers with the id of a job it may not see.
    func ownedByCaller(_ jobs: [EnqueueRequest]) -> [EnqueueRequest] {
        guard let tenant = Caller.current?.tenant else { return jobs }
        var owned = jobs
        for index in owned.indices {
            owned[index].trace[Self.tenantTraceField] = tenant
            if let key = owned[index].idempotencyKey { owned[index].idempotencyKey = Self.tenantUniqueKey(key, tenant: tenant) }
        }
        return owned
    }

    /// `<tenant>:<key>`, or `<tenant>:#<SHA-256 of key>` when that would pass the library's 256 bytes.
    static func tenantUniqueKey(_ key: String, tenant: String) -> String {
        let scoped = tenant + ":" + key
        return scoped.utf8.count <= 256 ? scoped : tenant + ":#" + APIKeySecret.hash(key)
    }

    /// Whether the caller may see a job whose envelope carries `trace`: operators always, a tenant its own jobs.
    static func callerMaySee(trace: [String: String]) -> Bool {
        guard let caller = Caller.current else { return false }
        return caller.isOperator || trace[tenantTraceField] == caller.tenant
    }

    /// Throws 404 unless the caller may see the job (`status` nil: unknown, 404 too).
    static func visible(_ status: JobStatus?, id: String) throws -> JobStatus {
        guard let status, callerMaySee(trace: status.trace) else { throw Problem.notFound(job: id) }
        return status
    }

    /// 404 unless the caller may see job `id` (in this replica's outbox, or in Redis). Operators are not checked,
    /// which spares them the extra read.
    func requireVisible(id: String) async throws {
        if Caller.current?.isOperator == true { return }
        if let entry = try await outbox.entry(id: id) {
            guard Self.callerMaySee(trace: entry.request.trace) else { throw Problem.notFound(job: id) }
            return
        }
        let farm = self.farm
        _ = try Self.visible(try await redisCall({ try await farm.status(id: id) }), id: id)
    }
}
