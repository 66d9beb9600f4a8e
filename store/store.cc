#include "store/store.h"

#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <zstd.h>

#include <memory>
#include <set>
#include <shared_mutex>
#include <utility>

#include "common/files.h"
#include "store/store_impl.h"

// Store::Open and what is not specific to one column family: resolving id prefixes, the
// secondary's CatchUp, Flush and GetUsage. The column families' own code is in
// recordings.cc (recordings, rr chunks, console, events), captures.cc (captures, frame
// batches, flows) and alerts.cc; the key and value encodings they share in store_encoding.cc,
// Store::Impl and the hash-chained-log code in store_impl.h.

namespace blackbox {

// ---- Store ----

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;

StatusOr<std::unique_ptr<Store>> Store::Open(const StoreOptions& options) {
  if (options.path.empty()) return InvalidArgument("store path is empty");
  if (options.zstd_level < ZSTD_minCLevel() || options.zstd_level > ZSTD_maxCLevel()) {
    return InvalidArgument("zstd level " + std::to_string(options.zstd_level) + " is out of range");
  }
  const std::string& path = options.path;
  const bool secondary = !options.secondary_path.empty();
  // A secondary is read-only: everything below that says read_only applies to it as well.
  const bool read_only = options.read_only || secondary;
  if (secondary && options.secondary_path == path) {
    return InvalidArgument("store " + path + ": the secondary path must differ from the store's");
  }
  const bool existed = PathExists(path + "/CURRENT");
  if (!existed && (read_only || !options.create_if_missing)) {
    return IOError("store " + path + " does not exist");
  }
  if (!existed) RETURN_IF_ERROR(MakeDirs(path));
  if (secondary) RETURN_IF_ERROR(MakeDirs(options.secondary_path));

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = options.create_if_missing;
  // A writer adds the column families a store written by an older binary lacks (only a store
  // that exists gets here without create_if_missing).
  db_options.create_missing_column_families = !read_only;
  db_options.keep_log_file_num = 5;
  // A secondary keeps every table file open: it must not lose one the writer deletes between
  // its catch-ups (RocksDB requires this).
  if (secondary) db_options.max_open_files = -1;

  rocksdb::ColumnFamilyOptions small_cf;
  small_cf.compression = rocksdb::kZSTD;
  rocksdb::ColumnFamilyOptions chunk_cf;
  chunk_cf.compression = rocksdb::kNoCompression;  // payloads are zstd frames already
  chunk_cf.write_buffer_size = 64 << 20;

  // RocksDB requires a writer to open every column family the database has, and a reader to
  // open only ones it has.
  std::set<std::string> have;
  std::vector<std::string> extra_names;
  if (existed) {
    std::vector<std::string> names;
    rocksdb::Status s = rocksdb::DB::ListColumnFamilies(db_options, path, &names);
    if (!s.ok()) return FromRocks(s, "cannot open store " + path);
    have.insert(names.begin(), names.end());
    for (int c = 0; c < kFirstOptionalCf; ++c) {
      if (read_only && !have.count(kCfNames[c])) {
        return Corruption("store " + path + " has no column family '" + kCfNames[c] +
                          "' (not a Blackbox store?)");
      }
    }
    for (const auto& n : names) {
      bool known = n == rocksdb::kDefaultColumnFamilyName;
      for (int c = 0; c < kNumCfs; ++c) known = known || n == kCfNames[c];
      if (!known) extra_names.push_back(n);
    }
  }
  // Order: ours (by Cf, without the optional ones a reader does not find), default, extras.
  std::vector<rocksdb::ColumnFamilyDescriptor> all;
  std::vector<int> slot;  // the Cf of all[i], or -1
  for (int c = 0; c < kNumCfs; ++c) {
    if (read_only && !have.count(kCfNames[c])) continue;
    all.emplace_back(kCfNames[c], c == kRrChunks || c == kFrames ? chunk_cf : small_cf);
    slot.push_back(c);
  }
  all.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
  for (const auto& n : extra_names) all.emplace_back(n, rocksdb::ColumnFamilyOptions());
  slot.resize(all.size(), -1);

  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->options.read_only = read_only;
  impl->secondary = secondary;
  impl->write_options.sync = options.sync_writes;
  impl->write_options.disableWAL = false;

  rocksdb::Status s;
  std::vector<rocksdb::ColumnFamilyHandle*> opened;
  if (secondary) {
    s = rocksdb::DB::OpenAsSecondary(db_options, path, options.secondary_path, all, &opened,
                                     &impl->db);
  } else if (read_only) {
    s = rocksdb::DB::OpenForReadOnly(db_options, path, all, &opened, &impl->db,
                                     /*error_if_wal_file_exists=*/false);
  } else {
    s = rocksdb::DB::Open(db_options, path, all, &opened, &impl->db);
  }
  if (s.ok()) {
    impl->handles.assign(kNumCfs, nullptr);
    for (size_t i = 0; i < opened.size(); ++i) {
      if (slot[i] >= 0) {
        impl->handles[slot[i]] = opened[i];
      } else {
        impl->handles.push_back(opened[i]);
      }
    }
  }
  if (!s.ok()) {
    impl->db = nullptr;
    impl->handles.clear();
    if (s.IsIOError() && ContainsNoCase(s.ToString(), "lock")) {
      return IOError("store " + path + " is in use by another Blackbox process (" + s.ToString() +
                     ")");
    }
    return FromRocks(s, "cannot open store " + path);
  }

  // Schema version.
  std::string version;
  s = impl->db->Get(rocksdb::ReadOptions(), impl->cf(kMeta), kSchemaKey, &version);
  if (s.ok()) {
    if (version != kSchemaVersion) {
      return Corruption("store " + path + " has unknown schema version '" + Printable(version) +
                        "' (this binary knows " + kSchemaVersion + ")");
    }
  } else if (s.IsNotFound()) {
    if (read_only) {
      return Corruption("store " + path + " has no schema version (not a Blackbox store?)");
    }
    // A fresh database (or one whose creation stopped before this write) gets stamped;
    // an existing one with data but no version is not ours to claim.
    if (existed) {
      for (int c = kRecordings; c < kNumCfs; ++c) {
        std::unique_ptr<rocksdb::Iterator> it =
            impl->NewIterator(rocksdb::ReadOptions(), static_cast<Cf>(c));
        it->SeekToFirst();
        if (it->Valid()) {
          return Corruption("store " + path + " has data but no schema version");
        }
      }
    }
    rocksdb::WriteOptions wo;
    wo.sync = true;
    s = impl->db->Put(wo, impl->cf(kMeta), kSchemaKey, kSchemaVersion);
    if (!s.ok()) return FromRocks(s, "store " + path + ": writing schema version");
  } else {
    return FromRocks(s, "store " + path + ": reading schema version");
  }

  impl->zstd_level = options.zstd_level;
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

// ---- id prefixes ----

// A full key of family `c`, or the only key starting with the prefix;
// `what` ("recording", "capture") names it in errors.
StatusOr<std::string> Store::Impl::ResolveKey(Cf c, const std::string& what,
                                              const std::string& id_or_prefix) const {
  const std::string field = what + " id or prefix";
  RETURN_IF_ERROR(ValidateId(id_or_prefix, field.c_str()));
  std::string value;
  rocksdb::Status s = Get(rocksdb::ReadOptions(), c, id_or_prefix, &value);
  if (s.ok()) return id_or_prefix;
  if (!s.IsNotFound()) return FromRocks(s, what + " " + id_or_prefix);

  std::vector<std::string> matches;
  size_t count = 0;
  std::unique_ptr<rocksdb::Iterator> it = NewIterator(rocksdb::ReadOptions(), c);
  for (it->Seek(id_or_prefix); it->Valid() && StartsWith(it->key(), id_or_prefix); it->Next()) {
    if (matches.size() < 10) matches.push_back(it->key().ToString());
    ++count;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "resolving " + id_or_prefix);
  if (count == 0) return NotFound("no " + what + " '" + id_or_prefix + "'");
  if (count == 1) return matches[0];
  std::string list;
  for (const auto& m : matches) list += (list.empty() ? "" : ", ") + m;
  if (count > matches.size()) list += ", ... (" + std::to_string(count) + " in all)";
  return InvalidArgument(what + " prefix '" + id_or_prefix + "' is ambiguous: " + list);
}

// ---- secondary ----

Status Store::CatchUp() {
  if (!impl_->secondary) {
    return FailedPrecondition("store " + impl_->options.path +
                              " is not open as a secondary (StoreOptions::secondary_path): "
                              "there is nothing to catch up with");
  }
  std::unique_lock<std::shared_mutex> lock(impl_->catchup_mu);
  rocksdb::Status s = impl_->db->TryCatchUpWithPrimary();
  if (!s.ok()) {
    return FromRocks(s, "store " + impl_->options.path + ": catching up with the writer");
  }
  return Status::Ok();
}

// ---- maintenance ----

Status Store::Flush() {
  if (impl_->options.read_only) return Status::Ok();  // nothing of ours in the memtables
  rocksdb::FlushOptions fo;
  fo.wait = true;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs;
  for (int c = 0; c < kNumCfs; ++c) {
    if (impl_->cf(static_cast<Cf>(c)) != nullptr) cfs.push_back(impl_->cf(static_cast<Cf>(c)));
  }
  rocksdb::Status s = impl_->db->Flush(fo, cfs);
  if (!s.ok()) return FromRocks(s, "flushing store " + impl_->options.path);
  return Status::Ok();
}

StatusOr<Store::Usage> Store::GetUsage(const std::string& recording_id) const {
  RETURN_IF_ERROR(ValidateId(recording_id));
  const std::string& id = recording_id;
  ReadScope scope = impl_->Scope();
  const rocksdb::ReadOptions& ro = scope.options();
  Usage u;
  RETURN_IF_ERROR(impl_->ForEachKeyOf(
      ro, kRrIndex, id, [&](rocksdb::Slice key_suffix, rocksdb::Slice value) -> Status {
        RrChunkInfo info;
        std::string problem = DecodeRrIndex(View(value), &info);
        if (!problem.empty()) {
          return Corruption("recording " + id + " rr index key " + KeyHex(id, key_suffix) + ": " +
                            problem);
        }
        u.rr_raw_bytes += info.raw_size;
        u.rr_stored_bytes += info.stored_size;
        return Status::Ok();
      }));
  RETURN_IF_ERROR(
      impl_->ForEachKeyOf(ro, kConsole, id, [&](rocksdb::Slice, rocksdb::Slice value) -> Status {
        size_t n = value.size();
        u.console_bytes += n > kConsoleHeaderSize ? n - kConsoleHeaderSize : 0;
        return Status::Ok();
      }));
  RETURN_IF_ERROR(
      impl_->ForEachKeyOf(ro, kEvents, id, [&](rocksdb::Slice, rocksdb::Slice) -> Status {
        u.events++;
        return Status::Ok();
      }));
  return u;
}

}  // namespace blackbox
