/* The table of fedc's subcommands. Add a subcommand here and in cli.h. */
#include <string.h>

#include "cli.h"

const cli_command cli_commands[] = {
    {"help", cmd_help, "show help for fedc, a subcommand or the config keys",
     "usage: fedc help [SUBCOMMAND | config]\n"
     "\n"
     "Without an argument, lists the subcommands. With a subcommand's name, prints its usage.\n"
     "`fedc help config` prints every configuration key: section, type, default, bounds, help.\n"},
    {"sim", cmd_sim, "run a whole federation in one process (virtual clients)",
     "usage: fedc sim CONFIG [--set section.key=value ...] [--out DIR] [--threads N]\n"
     "                [--json] [--quiet]\n"
     "\n"
     "Runs the federation CONFIG describes (an INI file; `fedc help config` lists the keys)\n"
     "with every client simulated in this process, one worker thread per core. The result is\n"
     "bit-identical for the same config and seed, whatever the thread count.\n"
     "  -s, --set K=V    override a config key (repeatable), e.g. --set run.rounds=5\n"
     "  -o, --out DIR    write DIR/metrics.jsonl, metrics.csv, model.safetensors, report.html\n"
     "  -t, --threads N  worker threads (default: run.threads, or one per core)\n"
     "  --json           one JSON object per round on stdout, then a final line with\n"
     "                   \"final\": true and model_sha256; human text goes to stderr\n"
     "  -q, --quiet      no progress display or summary\n"
     "  --mpi            run over MPI ranks (implied under mpirun): `mpirun -np R fedc sim\n"
     "                   CONFIG` gives the same model as one process (docs/SCALING.md)\n"},
    {"version", cmd_version, "print the version and build features",
     "usage: fedc version [--json]\n"
     "\n"
     "Prints the version, the build's features and the OpenBLAS kernel family in use.\n"
     "OpenBLAS picks its kernels from the CPU model when it loads; on a model it does not\n"
     "know it falls back to generic SSE3 kernels (\"Prescott\"), several times slower. fedc\n"
     "then re-runs itself with OPENBLAS_CORETYPE set to the family the CPU supports\n"
     "(SkylakeX for AVX-512, Haswell for AVX2). Set OPENBLAS_CORETYPE yourself to choose,\n"
     "or FEDC_NO_RETUNE=1 to keep what OpenBLAS picked.\n"},
    {"model", cmd_model, "show a model's layers, output shapes and parameter count",
     "usage: fedc model PRESET|SPEC [--input SHAPE] [--outputs N] [--json]\n"
     "\n"
     "Builds the model and prints its layers, output shapes and parameters.\n"
     "  PRESET          logreg, mlp, cnn, femnist-cnn, shakespeare-lstm\n"
     "  SPEC            a layer spec, e.g. 'conv(32,5,same) relu maxpool(2) dense(10)'\n"
     "                  (layers: dense conv maxpool avgpool relu tanh sigmoid dropout flatten\n"
     "                  embed lstm groupnorm loss; see docs/NN.md)\n"
     "  --input SHAPE   per-sample input shape, e.g. 1,28,28 (the default; 80 for token models)\n"
     "  --outputs N     classes (presets: default 10, 80 for shakespeare-lstm; a spec's output\n"
     "                  size is checked against N when given)\n"
     "  --json          one JSON object: spec, input, outputs, params, flops_per_sample,\n"
     "                  layers, tensors (the parameter layout)\n"},
    {"bench", cmd_bench, "benchmarks: training speed against the machine's sgemm peak",
     "usage: fedc bench [CASE] [options]\n"
     "\n"
     "Without a CASE, runs every case (what `make bench` does). Cases:\n"
     "  train [--json] [--models LIST] [--batches LIST] [--seconds S]\n"
     "      Training steps per second of the nn engine (forward, backward, SGD step, one\n"
     "      thread) for each model and batch size (default: mlp,cnn at 10,50), the GFLOP/s\n"
     "      achieved (2 x forward multiply-adds x 3) and their ratio to the single-core sgemm\n"
     "      peak measured in the same run, plus the memory each case touches. Times are\n"
     "      the best of 0.1 s windows (robust to other processes on the machine).\n"
     "      --seconds S   measuring time per case (default 6)\n"
     "      --json        one JSON line per case: model, batch, samples_per_s, gflops,\n"
     "                    peak_gflops, ratio, ...\n"
     "  sim [--json] [--rounds N] [--config FILE]\n"
     "      The simulation's own cost: per-round wall time against the clients' summed\n"
     "      training time (1 and 2 worker threads), and the aggregation fold in GB/s\n"
     "      against memcpy and the memory bandwidth measured in the same run.\n"
     "  secagg [--clients N --params P --dropout F --neighbors K --threshold T] [--json]\n"
     "      SecAgg+ server and client time and the communication expansion against the\n"
     "      plain update, for a clients x parameters grid (or one case).\n"
     "  server [--clients K] [--rounds R] [--uploads M] [--idle N] [--json]\n"
     "      The federation protocol on loopback (a `fedc server` child, K real clients): upload\n"
     "      MB/s of the cnn model's update against a plain HTTP POST of the same bytes, the\n"
     "      round time with clients that do not train, and the server's memory: peak, and\n"
     "      per client with N clients long-polling (defaults 16, 5, 8, 1000).\n"
     "  Like every subcommand, bench uses the right OpenBLAS kernels on CPUs OpenBLAS does\n"
     "  not know (see `fedc help version`); FEDC_NO_RETUNE=1 measures the kernels as loaded.\n"},
    {"dp-budget", cmd_dp_budget, "epsilon spent by DP training, or the noise for a target epsilon",
     "usage: fedc dp-budget --sample-rate Q --noise-multiplier Z --steps T --delta D\n"
     "                      [--orders tf|opacus|LIST] [--json]\n"
     "       fedc dp-budget --sample-rate Q --steps T --delta D --target-epsilon E [...]\n"
     "\n"
     "RDP accountant of the sampled Gaussian mechanism (as TF Privacy and Opacus compute it).\n"
     "Prints epsilon and the best RDP order; with --target-epsilon, the smallest noise\n"
     "multiplier (to 1e-6 relative) whose epsilon is <= E.\n"
     "  -q, --sample-rate Q        sampling rate per step, in (0, 1] (clients per round / clients)\n"
     "  -z, --noise-multiplier Z   noise stddev / clip, > 0\n"
     "  -t, --steps T              steps (rounds, or local DP-SGD steps), >= 1\n"
     "  -d, --delta D              delta, in (0, 1)\n"
     "  --orders tf|opacus|LIST    RDP orders: TF Privacy's list (default), Opacus's, or e.g.\n"
     "                             1.5,2..32,64\n"
     "  --target-epsilon E         print the noise multiplier for epsilon E instead\n"
     "  --json                     one JSON object: epsilon, order, noise_multiplier, ...\n"},
    {"inspect", cmd_inspect, "list a safetensors file's tensors, metadata, model_sha256",
     "usage: fedc inspect FILE [--json]\n"
     "\n"
     "Reads and validates FILE (safetensors, F32) and prints its tensors (name, dtype, shape),\n"
     "its metadata and model_sha256 (SHA-256 of all parameters, float32 LE, in layout order).\n"
     "Exits 1 if the metadata's model_sha256 does not match the parameters.\n"
     "  --json   one JSON object with \"tensors\", \"metadata\" and \"model_sha256\"\n"},
    {"data", cmd_data, "inspect a dataset, or how a partition splits it among clients",
     "usage: fedc data inspect SPEC [--json]\n"
     "       fedc data partition SPEC [--clients N] [--scheme S] [--alpha A] [--seed S]\n"
     "                           [--svg FILE] [--json] [options]\n"
     "       fedc data specs\n"
     "\n"
     "inspect: counts, shape, feature range and label distribution of the training and test sets\n"
     "(--json: one object with \"train\" and \"test\", each with n, shape, label_counts, ...).\n"
     "partition: per-client sizes and label histograms, summary statistics, an SVG heat map.\n"
     "  -n, --clients N            clients (default 100; natural: one per user)\n"
     "  -s, --scheme S             iid (default), dirichlet, shards, natural, quantity\n"
     "  -S, --seed S               run seed (default 0)\n"
     "  --alpha A                  dirichlet concentration (default 0.5)\n"
     "  --min-size M               dirichlet, quantity: training samples per client (default 10)\n"
     "  --max-attempts K           dirichlet: draws before giving up on --min-size (default 100)\n"
     "  --shards-per-client S      shards (default 2: the FedAvg paper's split)\n"
     "  --sigma S                  quantity: log-normal sigma of sizes (default 1)\n"
     "  --test-fraction F          each client's held-out share (default 0.1)\n"
     "  --svg FILE                 write a heat map (clients x classes) to FILE\n"
     "  --json                     one JSON object: stats and per-client counts\n"
     "SPEC: fmnist, mnist, idx:DIR, csv:PATH[,TEST]?label=COL, leaf:TRAIN[,TEST],\n"
     "synthetic:ALPHA,BETA[,seed=S], synthetic-iid; `fedc data specs` shows all options.\n"},
    {"server", cmd_server, "run a real federation: clients connect over HTTPS (docs/DEPLOY.md)",
     "usage: fedc server CONFIG --listen HOST:PORT --state DIR [--tls-cert F --tls-key F]\n"
     "                   [--allow-file F] [--set K=V ...] [--serve-on] [--json] [--quiet]\n"
     "       fedc server allow PUBKEY [LABEL] --state DIR [--json]\n"
     "       fedc server clients --state DIR [--json]\n"
     "       fedc server rounds --state DIR [--json]\n"
     "\n"
     "Runs the federation CONFIG describes with clients that are separate processes\n"
     "(`fedc client`), over HTTPS with signed requests (docs/PROTOCOL.md). The round policy\n"
     "is in [round] (overselect, deadline, retry_delay, max_norm) and clients.min; limits in\n"
     "[server]. Rounds are committed to the state DIR (SQLite + safetensors checkpoints): kill\n"
     "the server at any time and start it again with the same DIR to resume. At the end it\n"
     "writes DIR/model.safetensors and exits 0.\n"
     "  -l, --listen HOST:PORT   address to listen on (port 0: any free port, printed)\n"
     "  -S, --state DIR          the run store (created when missing)\n"
     "  --tls-cert F, --tls-key F  PEM certificate chain and key (without: plain HTTP)\n"
     "  --allow-file F           add the public keys in F (one per line) to the allow-list\n"
     "  -s, --set K=V            override a config key (repeatable)\n"
     "  --serve-on               keep serving after the run until SIGTERM\n"
     "  --json                   JSON lines on stdout: {\"listening\"...}, one per round, final\n"
     "allow: adds a client's public key (from `fedc keygen`); its id is its place in the list,\n"
     "which is the data shard it trains on. clients, rounds: list the allow-list and the\n"
     "committed rounds (with each round's model_sha256).\n"},
    {"client", cmd_client, "take part in a federation run by `fedc server`",
     "usage: fedc client --server URL --key F [--ca F | --insecure] [--config CONFIG]\n"
     "                   [--data SPEC] [--set K=V ...] [--tasks N] [--json] [--quiet]\n"
     "\n"
     "Checks in with the server, trains each task it is given with the built-in trainer and\n"
     "uploads the update, until the run is over. The training settings come from the server;\n"
     "CONFIG (or --data) says where the data is: the client trains the shard of its id.\n"
     "Timeouts and back-off are in [client].\n"
     "  -u, --server URL   https://HOST:PORT\n"
     "  -k, --key F        secret key file from `fedc keygen`\n"
     "  --ca F             CA certificate(s) to verify the server (default: the system's)\n"
     "  --insecure         do not verify the server's certificate (loopback tests only)\n"
     "  -c, --config F     the client's config (data.*)\n"
     "  -d, --data SPEC    shorthand for --set data.dataset=SPEC\n"
     "  --tasks N          exit after N tasks (a device that trains once per wake-up)\n"
     "  --json             JSON lines on stdout: one per event, then a final line\n"},
    {"keygen", cmd_keygen, "create a client's Ed25519 key pair for `fedc client`",
     "usage: fedc keygen --out FILE [--json]\n"
     "       fedc keygen --show FILE [--json]\n"
     "\n"
     "Writes a new secret key to FILE (mode 0600; an existing file is never overwritten) and\n"
     "prints its public key (64 hex digits) for `fedc server allow`. --show prints the public\n"
     "key of an existing secret key file.\n"},
    {NULL, NULL, NULL, NULL},
};

const cli_command *cli_find_command(const char *name)
{
    for (const cli_command *c = cli_commands; c->name; c++)
        if (strcmp(c->name, name) == 0) return c;
    return NULL;
}
