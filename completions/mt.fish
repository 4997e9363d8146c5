# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_mt_global_optspecs
    string join \n v/verbose q/quiet json run-dir= no-run-dir seed= h/help V/version
end

function __fish_mt_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_mt_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_mt_using_subcommand
    set -l cmd (__fish_mt_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c mt -n "__fish_mt_needs_command" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_needs_command" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_needs_command" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_needs_command" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_needs_command" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_needs_command" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_needs_command" -s h -l help -d 'Print help'
complete -c mt -n "__fish_mt_needs_command" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_needs_command" -f -a "download" -d 'Download dataset shards and model checkpoints from the Hugging Face Hub (resumable, verified, into the standard cache shared with huggingface_hub)'
complete -c mt -n "__fish_mt_needs_command" -f -a "inspect" -d 'Statistics, samples and plots of dataset shards'
complete -c mt -n "__fish_mt_needs_command" -f -a "convert" -d 'Convert between dataset, benchmark, medical-image and checkpoint formats'
complete -c mt -n "__fish_mt_needs_command" -f -a "roi" -d 'Regions of interest from masks or boxes: boxes, area %, position words, overlays'
complete -c mt -n "__fish_mt_needs_command" -f -a "caption" -d 'Generate captions with a LLaVA-style model (the MedTrinity captioner or LLaVA-Med++)'
complete -c mt -n "__fish_mt_needs_command" -f -a "chat" -d 'Ask a model about an image: a conversation on the terminal, or JSONL requests on stdin'
complete -c mt -n "__fish_mt_needs_command" -f -a "serve" -d 'Serve a model over OpenAI\'s chat completions API (continuous batching)'
complete -c mt -n "__fish_mt_needs_command" -f -a "train" -d 'Pre-training stages: projector alignment (1) and instruction tuning (2)'
complete -c mt -n "__fish_mt_needs_command" -f -a "finetune" -d 'Fine-tune on VQA-RAD, SLAKE or PathVQA, fully or with LoRA'
complete -c mt -n "__fish_mt_needs_command" -f -a "eval" -d 'Score answers, or run and score a checkpoint on a benchmark'
complete -c mt -n "__fish_mt_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c mt -n "__fish_mt_needs_command" -f -a "replay" -d 'Run a command again with the arguments recorded in a run directory'
complete -c mt -n "__fish_mt_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mt -n "__fish_mt_using_subcommand download" -l repo-type -d 'Repository type' -r -f -a "model\t'A model repository'
dataset\t'A dataset repository'"
complete -c mt -n "__fish_mt_using_subcommand download" -l revision -d 'Branch, tag, commit, refs/pr/N or refs/convert/parquet (default: main)' -r
complete -c mt -n "__fish_mt_using_subcommand download" -l include -d 'Only files matching these globs (fnmatch; `*` matches `/`; `dir/` = all under dir)' -r
complete -c mt -n "__fish_mt_using_subcommand download" -l exclude -d 'Skip files matching these globs' -r
complete -c mt -n "__fish_mt_using_subcommand download" -l config -d 'MedTrinity-25M file set: 25M_demo (parquet with images) or 25M_full (parquet manifests + 25M_accessible/ image shards); any other name selects `NAME/`' -r
complete -c mt -n "__fish_mt_using_subcommand download" -l local-dir -d 'Put files at their paths in this folder instead of the shared cache' -r -F
complete -c mt -n "__fish_mt_using_subcommand download" -l max-workers -d 'Parallel downloads' -r
complete -c mt -n "__fish_mt_using_subcommand download" -l extract-to -d 'Where --extract puts the files (implies --extract; default: <local dir>/extracted, or ./<repo name>-extracted when downloading into the cache)' -r -F
complete -c mt -n "__fish_mt_using_subcommand download" -l token -d 'Access token (else HF_TOKEN, HF_TOKEN_PATH, $HF_HOME/token). Never logged' -r
complete -c mt -n "__fish_mt_using_subcommand download" -l stall-timeout -d 'Give up on a connection after this many seconds without a byte, and resume' -r
complete -c mt -n "__fish_mt_using_subcommand download" -l retries -d 'Failed attempts per request before a file fails (attempts that moved bytes are free)' -r
complete -c mt -n "__fish_mt_using_subcommand download" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand download" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand download" -l dry-run -d 'List files, sizes and what is already present; download nothing'
complete -c mt -n "__fish_mt_using_subcommand download" -l verify -d 'Re-check a finished download (sha256 / git id) without downloading'
complete -c mt -n "__fish_mt_using_subcommand download" -l extract -d 'After downloading, extract the .tar.zst image shards (resumable per shard) and check the parquet manifests\' file_name column against the extracted files'
complete -c mt -n "__fish_mt_using_subcommand download" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand download" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand download" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand download" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand download" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mt -n "__fish_mt_using_subcommand download" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand inspect" -l image-folder -l images -d 'Where image file names resolve: a folder, or .tar.zst shards (file, folder, glob)' -r -F
complete -c mt -n "__fish_mt_using_subcommand inspect" -l head -d 'Print the first N records (after --filter) instead of statistics' -r
complete -c mt -n "__fish_mt_using_subcommand inspect" -l sample -d 'Print N records drawn at random (reproducible with --seed) instead of statistics' -r
complete -c mt -n "__fish_mt_using_subcommand inspect" -l filter -d 'Only records matching this SQL WHERE clause' -r
complete -c mt -n "__fish_mt_using_subcommand inspect" -l columns -d 'Read only these columns (comma-separated; names, or the roles id, caption, source, image). Image statistics need the image column' -r
complete -c mt -n "__fish_mt_using_subcommand inspect" -l plots -d 'Write PNG histograms, bar charts and a contact sheet of sample images into DIR' -r -F
complete -c mt -n "__fish_mt_using_subcommand inspect" -l contact-sheet -d 'Images on the --plots contact sheet' -r
complete -c mt -n "__fish_mt_using_subcommand inspect" -s j -l threads -d 'Worker threads (default: one per core)' -r
complete -c mt -n "__fish_mt_using_subcommand inspect" -l spill-mb -d 'Memory for id and image-hash sets before they spill to temporary files, in MB' -r
complete -c mt -n "__fish_mt_using_subcommand inspect" -l against -d 'Find these benchmark images in the inputs: any path mt reads, or BENCH[:SPLIT]=PATH for VQA-RAD / SLAKE / PathVQA in a released or hub layout (split test unless named). Exact copies (same pixels) and near copies (re-encoded, resized, cropped) go to contamination.jsonl in the run directory' -r
complete -c mt -n "__fish_mt_using_subcommand inspect" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand inspect" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand inspect" -l no-images -d 'Skip image statistics (image bytes are not read)'
complete -c mt -n "__fish_mt_using_subcommand inspect" -l decode -d 'Decode every image fully: slower, but finds corrupt pixel data a header misses'
complete -c mt -n "__fish_mt_using_subcommand inspect" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand inspect" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand inspect" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand inspect" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand inspect" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mt -n "__fish_mt_using_subcommand inspect" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand convert; and not __fish_seen_subcommand_from vqa llava parquet wds image merge merge-lora gguf knowledge-index help" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and not __fish_seen_subcommand_from vqa llava parquet wds image merge merge-lora gguf knowledge-index help" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and not __fish_seen_subcommand_from vqa llava parquet wds image merge merge-lora gguf knowledge-index help" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand convert; and not __fish_seen_subcommand_from vqa llava parquet wds image merge merge-lora gguf knowledge-index help" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand convert; and not __fish_seen_subcommand_from vqa llava parquet wds image merge merge-lora gguf knowledge-index help" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand convert; and not __fish_seen_subcommand_from vqa llava parquet wds image merge merge-lora gguf knowledge-index help" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand convert; and not __fish_seen_subcommand_from vqa llava parquet wds image merge merge-lora gguf knowledge-index help" -s h -l help -d 'Print help'
complete -c mt -n "__fish_mt_using_subcommand convert; and not __fish_seen_subcommand_from vqa llava parquet wds image merge merge-lora gguf knowledge-index help" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand convert; and not __fish_seen_subcommand_from vqa llava parquet wds image merge merge-lora gguf knowledge-index help" -f -a "vqa" -d 'VQA-RAD, SLAKE or PathVQA (released files or hub parquet) -> LLaVA eval JSON'
complete -c mt -n "__fish_mt_using_subcommand convert; and not __fish_seen_subcommand_from vqa llava parquet wds image merge merge-lora gguf knowledge-index help" -f -a "llava" -d 'MedTrinity shards, LLaVA files or image folders -> LLaVA conversation JSON/JSONL + image files'
complete -c mt -n "__fish_mt_using_subcommand convert; and not __fish_seen_subcommand_from vqa llava parquet wds image merge merge-lora gguf knowledge-index help" -f -a "parquet" -d 'Image folders, LLaVA files or MedTrinity shards -> HF-style parquet shards'
complete -c mt -n "__fish_mt_using_subcommand convert; and not __fish_seen_subcommand_from vqa llava parquet wds image merge merge-lora gguf knowledge-index help" -f -a "wds" -d 'Image folders, LLaVA files or MedTrinity shards -> WebDataset tar shards'
complete -c mt -n "__fish_mt_using_subcommand convert; and not __fish_seen_subcommand_from vqa llava parquet wds image merge merge-lora gguf knowledge-index help" -f -a "image" -d 'DICOM / NIfTI -> PNG/JPEG with metadata'
complete -c mt -n "__fish_mt_using_subcommand convert; and not __fish_seen_subcommand_from vqa llava parquet wds image merge merge-lora gguf knowledge-index help" -f -a "merge" -d 'Join the shard outputs of `mt caption --shard I/N` into one file'
complete -c mt -n "__fish_mt_using_subcommand convert; and not __fish_seen_subcommand_from vqa llava parquet wds image merge merge-lora gguf knowledge-index help" -f -a "merge-lora" -d 'Merge a LoRA adapter into its base checkpoint'
complete -c mt -n "__fish_mt_using_subcommand convert; and not __fish_seen_subcommand_from vqa llava parquet wds image merge merge-lora gguf knowledge-index help" -f -a "gguf" -d 'A checkpoint\'s language model -> a llama.cpp GGUF file (f32, f16 or quantized)'
complete -c mt -n "__fish_mt_using_subcommand convert; and not __fish_seen_subcommand_from vqa llava parquet wds image merge merge-lora gguf knowledge-index help" -f -a "knowledge-index" -d 'Build the BM25 index of a knowledge corpus'
complete -c mt -n "__fish_mt_using_subcommand convert; and not __fish_seen_subcommand_from vqa llava parquet wds image merge merge-lora gguf knowledge-index help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from vqa" -l bench -d 'Benchmark' -r -f -a "vqa-rad\t'VQA-RAD'
slake\t'SLAKE'
pathvqa\t'PathVQA'"
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from vqa" -l data -l input -d 'Dataset folder (or file) in a released or hub layout' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from vqa" -l split -d 'Split: train, validation or test' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from vqa" -s o -l output -d 'Output JSON (`-` = stdout)' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from vqa" -l images-out -d 'Write the images here (needed for parquet copies; copies files otherwise)' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from vqa" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from vqa" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from vqa" -l all-languages -d 'SLAKE: keep the Chinese questions too'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from vqa" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from vqa" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from vqa" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from vqa" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from vqa" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from vqa" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from llava" -s o -l output -d 'Output: a .jsonl (resumable, `-` = stdout) or .json file for `llava`, a folder for `parquet` and `wds`' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from llava" -l image-folder -l images -d 'Where image names in manifests / LLaVA records resolve (folder or .tar.zst shards)' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from llava" -l filter -d 'Only the records this SQL WHERE clause keeps (as `mt inspect --filter`; the caption parts modality, organ, roi_location, roi_area, texture, relations can be used too)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from llava" -l split -d 'Split the records by a hash of their id: NAME:FRACTION,... (train:0.9,test:0.1); fractions summing under 1 leave the rest out (a deterministic sample). A NAME alone puts every record in that split (parquet\'s file prefix is `train` without)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from llava" -l stratify -d 'Cut each modality (or organ) group in the --split fractions exactly' -r -f -a "modality\t'The first imaging modality the caption names (CT, MRI, ...)'
organ\t'The first organ or tissue the caption names'"
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from llava" -l limit -d 'Write at most this many records (after --filter, --exclude-matches and --split, in input order)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from llava" -l exclude-matches -d 'Leave out the training records a contamination report lists (contamination.jsonl of `mt inspect --against`)' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from llava" -l images-out -d 'Write the images here' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from llava" -l instruction -d 'The human turn after `<image>\\n`' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from llava" -l instructions -d 'A pool of human turns, one drawn per record (by the global --seed and the record\'s id): a text file of one instruction a line, or a JSON array of strings' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from llava" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from llava" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from llava" -l parts -d 'Write the six MedTrinity caption parts as fields (columns in parquet): modality, organ, roi_location, roi_area, texture, relations'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from llava" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from llava" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from llava" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from llava" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from llava" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from llava" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from parquet" -s o -l output -d 'Output: a .jsonl (resumable, `-` = stdout) or .json file for `llava`, a folder for `parquet` and `wds`' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from parquet" -l image-folder -l images -d 'Where image names in manifests / LLaVA records resolve (folder or .tar.zst shards)' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from parquet" -l filter -d 'Only the records this SQL WHERE clause keeps (as `mt inspect --filter`; the caption parts modality, organ, roi_location, roi_area, texture, relations can be used too)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from parquet" -l split -d 'Split the records by a hash of their id: NAME:FRACTION,... (train:0.9,test:0.1); fractions summing under 1 leave the rest out (a deterministic sample). A NAME alone puts every record in that split (parquet\'s file prefix is `train` without)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from parquet" -l stratify -d 'Cut each modality (or organ) group in the --split fractions exactly' -r -f -a "modality\t'The first imaging modality the caption names (CT, MRI, ...)'
organ\t'The first organ or tissue the caption names'"
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from parquet" -l limit -d 'Write at most this many records (after --filter, --exclude-matches and --split, in input order)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from parquet" -l exclude-matches -d 'Leave out the training records a contamination report lists (contamination.jsonl of `mt inspect --against`)' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from parquet" -l row-group-size -d 'Target row group size (bytes, or with KB/MB/GB)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from parquet" -l shard-size -d 'Target shard size (bytes, or with KB/MB/GB)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from parquet" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from parquet" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from parquet" -l parts -d 'Write the six MedTrinity caption parts as fields (columns in parquet): modality, organ, roi_location, roi_area, texture, relations'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from parquet" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from parquet" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from parquet" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from parquet" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from parquet" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from parquet" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from wds" -s o -l output -d 'Output: a .jsonl (resumable, `-` = stdout) or .json file for `llava`, a folder for `parquet` and `wds`' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from wds" -l image-folder -l images -d 'Where image names in manifests / LLaVA records resolve (folder or .tar.zst shards)' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from wds" -l filter -d 'Only the records this SQL WHERE clause keeps (as `mt inspect --filter`; the caption parts modality, organ, roi_location, roi_area, texture, relations can be used too)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from wds" -l split -d 'Split the records by a hash of their id: NAME:FRACTION,... (train:0.9,test:0.1); fractions summing under 1 leave the rest out (a deterministic sample). A NAME alone puts every record in that split (parquet\'s file prefix is `train` without)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from wds" -l stratify -d 'Cut each modality (or organ) group in the --split fractions exactly' -r -f -a "modality\t'The first imaging modality the caption names (CT, MRI, ...)'
organ\t'The first organ or tissue the caption names'"
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from wds" -l limit -d 'Write at most this many records (after --filter, --exclude-matches and --split, in input order)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from wds" -l exclude-matches -d 'Leave out the training records a contamination report lists (contamination.jsonl of `mt inspect --against`)' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from wds" -l prefix -d 'Shard file name prefix (with --split, each split\'s name)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from wds" -l shard-records -d 'Records per shard at most' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from wds" -l shard-size -d 'Shard size at most (bytes, or with KB/MB/GB)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from wds" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from wds" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from wds" -l parts -d 'Write the six MedTrinity caption parts as fields (columns in parquet): modality, organ, roi_location, roi_area, texture, relations'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from wds" -l zstd -d 'zstd-compress the shards (.tar.zst)'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from wds" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from wds" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from wds" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from wds" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from wds" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from wds" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from image" -s o -l output -d 'Output folder' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from image" -l format -d 'Picture format' -r -f -a "png\t''
jpeg\t''"
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from image" -l quality -d 'JPEG quality (1-100)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from image" -l bits -d 'Bits per grey sample: 8, or 16 (PNG only) to keep the full windowed range' -r -f -a "8\t''
16\t''"
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from image" -l window -d 'Window CENTER,WIDTH (LINEAR) for every file, or `auto` for each file\'s min-max window [default: DICOM the file\'s window, NIfTI the percentiles]' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from image" -l percentile -d 'NIfTI: window between these percentiles of the volume' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from image" -l axis -d 'NIfTI: array axis to slice across (2 = the third axis, axial in RAS-like files)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from image" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from image" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from image" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from image" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from image" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from image" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from image" -s h -l help -d 'Print help'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from image" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge" -s o -l output -d 'The merged file (JSONL, or parquet for *.parquet)' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge" -l allow-incomplete -d 'Merge what is there even when shards are missing or unfinished'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge" -s h -l help -d 'Print help'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge-lora" -l adapter -d 'The adapter folder (adapter_config.json + adapter_model.safetensors)' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge-lora" -s o -l output -d 'Output checkpoint folder' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge-lora" -l model -l ckpt -d 'The base checkpoint the adapter was trained on (original LLaVA layout)' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge-lora" -l vision-tower -l mmproj -d 'CLIP tower folder when the base checkpoint does not carry or find one' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge-lora" -l dtype -d 'Weights dtype of the output (default: the base config\'s)' -r -f -a "f32\t'32-bit float'
bf16\t'bfloat16'
f16\t'IEEE half precision'"
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge-lora" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge-lora" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge-lora" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge-lora" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge-lora" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge-lora" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge-lora" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from merge-lora" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from gguf" -l model -l ckpt -d 'Checkpoint folder (original LLaVA or llava-hf layout), or a Hub model id `org/name[@revision]` (from the Hugging Face cache, fetched when missing)' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from gguf" -l vision-tower -l mmproj -d 'CLIP tower folder when the checkpoint does not carry or find one; with a GGUF --model, its mmproj GGUF file (llama.cpp\'s LLaVA pair, as llama-mtmd-cli takes it)' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from gguf" -l dtype -d 'Compute dtype (default: bf16 on a GPU, f32 on the CPU)' -r -f -a "f32\t'32-bit float'
bf16\t'bfloat16'
f16\t'IEEE half precision'"
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from gguf" -s o -l output -d 'Output .gguf file' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from gguf" -l type -d 'Format of the matrices (norms stay f32): f32, f16, or a --quantize type (the token embeddings and LM head too)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from gguf" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from gguf" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from gguf" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from gguf" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from gguf" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from gguf" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from gguf" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from gguf" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from knowledge-index" -s o -l output -d 'Index folder [default: <first corpus>.bm25]' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from knowledge-index" -l memory -d 'Indexing memory, all threads together (bytes, or with KB/MB/GB; at least 15MB)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from knowledge-index" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from knowledge-index" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from knowledge-index" -l force -d 'Rebuild even when the index is up to date'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from knowledge-index" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from knowledge-index" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from knowledge-index" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from knowledge-index" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from knowledge-index" -s h -l help -d 'Print help'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from knowledge-index" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from help" -f -a "vqa" -d 'VQA-RAD, SLAKE or PathVQA (released files or hub parquet) -> LLaVA eval JSON'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from help" -f -a "llava" -d 'MedTrinity shards, LLaVA files or image folders -> LLaVA conversation JSON/JSONL + image files'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from help" -f -a "parquet" -d 'Image folders, LLaVA files or MedTrinity shards -> HF-style parquet shards'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from help" -f -a "wds" -d 'Image folders, LLaVA files or MedTrinity shards -> WebDataset tar shards'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from help" -f -a "image" -d 'DICOM / NIfTI -> PNG/JPEG with metadata'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from help" -f -a "merge" -d 'Join the shard outputs of `mt caption --shard I/N` into one file'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from help" -f -a "merge-lora" -d 'Merge a LoRA adapter into its base checkpoint'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from help" -f -a "gguf" -d 'A checkpoint\'s language model -> a llama.cpp GGUF file (f32, f16 or quantized)'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from help" -f -a "knowledge-index" -d 'Build the BM25 index of a knowledge corpus'
complete -c mt -n "__fish_mt_using_subcommand convert; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mt -n "__fish_mt_using_subcommand roi" -s o -l output -d 'Output JSONL, or parquet for *.parquet (`-` = stdout)' -r -F
complete -c mt -n "__fish_mt_using_subcommand roi" -l overlay -d 'Write images with the ROI drawn as a green box into DIR' -r -F
complete -c mt -n "__fish_mt_using_subcommand roi" -l orientation -d 'Left/right convention for position words' -r -f -a "radiological\t'The patient\'s sides: the image\'s left is the patient\'s right (CT, MR, X-ray)'
anatomical\t'The sides as the image shows them'"
complete -c mt -n "__fish_mt_using_subcommand roi" -l min-size -d 'Smallest connected component kept, in pixels' -r
complete -c mt -n "__fish_mt_using_subcommand roi" -l connectivity -d 'Pixel connectivity of components: 4 or 8' -r -f -a "4\t'Edge neighbours only'
8\t'Edge and corner neighbours'"
complete -c mt -n "__fish_mt_using_subcommand roi" -l merge-distance -d 'Merge components of one label whose boxes are at most this many pixels apart' -r
complete -c mt -n "__fish_mt_using_subcommand roi" -l image-folder -l images -d 'Folder the images named in COCO JSON live in (default: the JSON\'s folder)' -r -F
complete -c mt -n "__fish_mt_using_subcommand roi" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand roi" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand roi" -l outline -d 'Also draw the mask\'s outline (yellow) on the overlays'
complete -c mt -n "__fish_mt_using_subcommand roi" -l split-components -d 'One ROI per connected component instead of one per label'
complete -c mt -n "__fish_mt_using_subcommand roi" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand roi" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand roi" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand roi" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand roi" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mt -n "__fish_mt_using_subcommand roi" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand caption" -l vision-tower -l mmproj -d 'CLIP tower folder when the checkpoint does not carry or find one; with a GGUF --model, its mmproj GGUF file (llama.cpp\'s LLaVA pair, as llama-mtmd-cli takes it)' -r -F
complete -c mt -n "__fish_mt_using_subcommand caption" -l dtype -d 'Compute dtype (default: bf16 on a GPU, f32 on the CPU)' -r -f -a "f32\t'32-bit float'
bf16\t'bfloat16'
f16\t'IEEE half precision'"
complete -c mt -n "__fish_mt_using_subcommand caption" -l quantize -d 'Quantize the language model at load: its Linear weights, LM head and token embeddings become GGML blocks (q8_0: 8.5 bits a weight, q6k: 6.6, q4k: 4.5; a matrix whose rows are not whole blocks falls back to q8_0, else stays dense). The vision tower, the projector and the norms stay in --dtype. Inference only' -r -f -a "q8_0\t'8-bit blocks of 32 (8.5 bits a weight)'
q6k\t'6-bit k-quants (6.6 bits a weight)'
q4k\t'4-bit k-quants (4.5 bits a weight)'"
complete -c mt -n "__fish_mt_using_subcommand caption" -s o -l output -d 'Output JSONL or parquet (`-` = stdout); ids already in the file are skipped' -r -F
complete -c mt -n "__fish_mt_using_subcommand caption" -l prompt -d 'The instruction given with every image' -r
complete -c mt -n "__fish_mt_using_subcommand caption" -l conv-mode -d 'Conversation template the question is put in (LLaVA\'s `--conv-mode`: llama3, vicuna_v1, llava_v1, llava_llama_2, mistral_instruct, chatml_direct, phi3_instruct, plain, ...; `llava-med:vicuna_v1` for LLaVA-Med\'s own rendering). Default: the checkpoint\'s (llama3 for LLaVA-Med++)' -r
complete -c mt -n "__fish_mt_using_subcommand caption" -l temperature -d 'Sampling temperature (default 0: greedy, reproducible)' -r
complete -c mt -n "__fish_mt_using_subcommand caption" -l top-p -d 'Nucleus sampling mass (default 1: off)' -r
complete -c mt -n "__fish_mt_using_subcommand caption" -l top-k -d 'Sample among the k most likely tokens (default 0: off)' -r
complete -c mt -n "__fish_mt_using_subcommand caption" -l stop -d 'Text that ends a caption (repeatable); the caption is cut before it' -r
complete -c mt -n "__fish_mt_using_subcommand caption" -l batch-size -d 'Images per forward pass' -r
complete -c mt -n "__fish_mt_using_subcommand caption" -l gpu -d 'GPU index (needs a CUDA build). Default: GPU 0 when a CUDA build sees one, else the CPU' -r
complete -c mt -n "__fish_mt_using_subcommand caption" -l pipeline -d 'Caption through a pipeline: `medtrinity` (coarse caption + ROI + knowledge)' -r -f -a "medtrinity\t'Coarse caption + ROI + retrieved knowledge -> a multigranular description'"
complete -c mt -n "__fish_mt_using_subcommand caption" -l rois -d '`mt roi` output (JSONL or parquet) whose regions are joined to the records by id' -r -F
complete -c mt -n "__fish_mt_using_subcommand caption" -l knowledge -d 'Knowledge passages: a JSONL corpus ({id, title, text, source}; indexed once, beside it) or an index built by `mt convert knowledge-index`' -r -F
complete -c mt -n "__fish_mt_using_subcommand caption" -l knowledge-k -d 'Passages retrieved per record' -r
complete -c mt -n "__fish_mt_using_subcommand caption" -l coarse-templates -d 'JSON of source name -> coarse caption template (`*` = all other sources)' -r -F
complete -c mt -n "__fish_mt_using_subcommand caption" -l orientation -d 'Left/right convention of position words for boxes from `bbox` fields in the pipeline (default `auto`: radiological for CT, MRI, X-ray, PET; as shown otherwise)' -r -f -a "auto\t'Radiological for CT, MRI, X-ray and PET; as shown otherwise'
radiological\t'The patient\'s sides: the image\'s left is the patient\'s right'
anatomical\t'The sides as the image shows them'"
complete -c mt -n "__fish_mt_using_subcommand caption" -l shard -d 'Caption only shard I of N (ids by hash), `slurm/N` or `slurm` in a Slurm array; output to <stem>-0000I-of-0000N.<ext>' -r
complete -c mt -n "__fish_mt_using_subcommand caption" -l model -l ckpt -d 'Checkpoint folder (original LLaVA or llava-hf layout), or a Hub model id `org/name[@revision]` (from the Hugging Face cache, fetched when missing)' -r -F
complete -c mt -n "__fish_mt_using_subcommand caption" -l max-new-tokens -d 'Most tokens generated per caption' -r
complete -c mt -n "__fish_mt_using_subcommand caption" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand caption" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand caption" -l ignore-eos -d 'Keep generating past end-of-sequence tokens (benchmarks: a fixed token count)'
complete -c mt -n "__fish_mt_using_subcommand caption" -l cpu -d 'Run on the CPU even when a GPU is visible'
complete -c mt -n "__fish_mt_using_subcommand caption" -l dry-run -d 'Print (or write to -o) the prompts and what went into them; load no model'
complete -c mt -n "__fish_mt_using_subcommand caption" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand caption" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand caption" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand caption" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand caption" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mt -n "__fish_mt_using_subcommand caption" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand chat" -l model -l ckpt -d 'Checkpoint folder (original LLaVA or llava-hf layout), or a Hub model id `org/name[@revision]` (from the Hugging Face cache, fetched when missing)' -r -F
complete -c mt -n "__fish_mt_using_subcommand chat" -l vision-tower -l mmproj -d 'CLIP tower folder when the checkpoint does not carry or find one; with a GGUF --model, its mmproj GGUF file (llama.cpp\'s LLaVA pair, as llama-mtmd-cli takes it)' -r -F
complete -c mt -n "__fish_mt_using_subcommand chat" -l dtype -d 'Compute dtype (default: bf16 on a GPU, f32 on the CPU)' -r -f -a "f32\t'32-bit float'
bf16\t'bfloat16'
f16\t'IEEE half precision'"
complete -c mt -n "__fish_mt_using_subcommand chat" -l conv-mode -d 'Conversation template the question is put in (LLaVA\'s `--conv-mode`: llama3, vicuna_v1, llava_v1, llava_llama_2, mistral_instruct, chatml_direct, phi3_instruct, plain, ...; `llava-med:vicuna_v1` for LLaVA-Med\'s own rendering). Default: the checkpoint\'s (llama3 for LLaVA-Med++)' -r
complete -c mt -n "__fish_mt_using_subcommand chat" -l temperature -d 'Sampling temperature (default 0: greedy, reproducible)' -r
complete -c mt -n "__fish_mt_using_subcommand chat" -l top-p -d 'Nucleus sampling mass (default 1: off)' -r
complete -c mt -n "__fish_mt_using_subcommand chat" -l top-k -d 'Sample among the k most likely tokens (default 0: off)' -r
complete -c mt -n "__fish_mt_using_subcommand chat" -l quantize -d 'Quantize the language model at load: its Linear weights, LM head and token embeddings become GGML blocks (q8_0: 8.5 bits a weight, q6k: 6.6, q4k: 4.5; a matrix whose rows are not whole blocks falls back to q8_0, else stays dense). The vision tower, the projector and the norms stay in --dtype. Inference only' -r -f -a "q8_0\t'8-bit blocks of 32 (8.5 bits a weight)'
q6k\t'6-bit k-quants (6.6 bits a weight)'
q4k\t'4-bit k-quants (4.5 bits a weight)'"
complete -c mt -n "__fish_mt_using_subcommand chat" -l gpu -d 'GPU index (needs a CUDA build). Default: GPU 0 when a CUDA build sees one, else the CPU' -r
complete -c mt -n "__fish_mt_using_subcommand chat" -l system -d 'The system message, in place of the template\'s (its header kept; a chat template gets a system turn); `mt serve`: for requests that bring none' -r
complete -c mt -n "__fish_mt_using_subcommand chat" -l image-folder -l images -d 'Where relative `image` paths of the requests resolve (default: the working folder)' -r -F
complete -c mt -n "__fish_mt_using_subcommand chat" -l max-new-tokens -d 'Most tokens generated per answer' -r
complete -c mt -n "__fish_mt_using_subcommand chat" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand chat" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand chat" -l cpu -d 'Run on the CPU even when a GPU is visible'
complete -c mt -n "__fish_mt_using_subcommand chat" -l interactive -d 'Converse line by line even when stdin is not a terminal (a script of turns)'
complete -c mt -n "__fish_mt_using_subcommand chat" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand chat" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand chat" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand chat" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand chat" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mt -n "__fish_mt_using_subcommand chat" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand serve" -l model -l ckpt -d 'Checkpoint folder (original LLaVA or llava-hf layout), or a Hub model id `org/name[@revision]` (from the Hugging Face cache, fetched when missing)' -r -F
complete -c mt -n "__fish_mt_using_subcommand serve" -l vision-tower -l mmproj -d 'CLIP tower folder when the checkpoint does not carry or find one; with a GGUF --model, its mmproj GGUF file (llama.cpp\'s LLaVA pair, as llama-mtmd-cli takes it)' -r -F
complete -c mt -n "__fish_mt_using_subcommand serve" -l dtype -d 'Compute dtype (default: bf16 on a GPU, f32 on the CPU)' -r -f -a "f32\t'32-bit float'
bf16\t'bfloat16'
f16\t'IEEE half precision'"
complete -c mt -n "__fish_mt_using_subcommand serve" -l conv-mode -d 'Conversation template the question is put in (LLaVA\'s `--conv-mode`: llama3, vicuna_v1, llava_v1, llava_llama_2, mistral_instruct, chatml_direct, phi3_instruct, plain, ...; `llava-med:vicuna_v1` for LLaVA-Med\'s own rendering). Default: the checkpoint\'s (llama3 for LLaVA-Med++)' -r
complete -c mt -n "__fish_mt_using_subcommand serve" -l temperature -d 'Sampling temperature (default 0: greedy, reproducible)' -r
complete -c mt -n "__fish_mt_using_subcommand serve" -l top-p -d 'Nucleus sampling mass (default 1: off)' -r
complete -c mt -n "__fish_mt_using_subcommand serve" -l top-k -d 'Sample among the k most likely tokens (default 0: off)' -r
complete -c mt -n "__fish_mt_using_subcommand serve" -l quantize -d 'Quantize the language model at load: its Linear weights, LM head and token embeddings become GGML blocks (q8_0: 8.5 bits a weight, q6k: 6.6, q4k: 4.5; a matrix whose rows are not whole blocks falls back to q8_0, else stays dense). The vision tower, the projector and the norms stay in --dtype. Inference only' -r -f -a "q8_0\t'8-bit blocks of 32 (8.5 bits a weight)'
q6k\t'6-bit k-quants (6.6 bits a weight)'
q4k\t'4-bit k-quants (4.5 bits a weight)'"
complete -c mt -n "__fish_mt_using_subcommand serve" -l gpu -d 'GPU index (needs a CUDA build). Default: GPU 0 when a CUDA build sees one, else the CPU' -r
complete -c mt -n "__fish_mt_using_subcommand serve" -l system -d 'The system message, in place of the template\'s (its header kept; a chat template gets a system turn); `mt serve`: for requests that bring none' -r
complete -c mt -n "__fish_mt_using_subcommand serve" -l served-model-name -d 'The model\'s name in the API (`model` of requests, `/v1/models`). Default: the checkpoint folder\'s name (NAME for a Hub id ORG/NAME)' -r
complete -c mt -n "__fish_mt_using_subcommand serve" -l host -d 'Address to listen on (0.0.0.0 to accept other machines)' -r
complete -c mt -n "__fish_mt_using_subcommand serve" -l port -d 'Port to listen on (0: any free one; the address is printed)' -r
complete -c mt -n "__fish_mt_using_subcommand serve" -l api-key -d 'Clients must send `Authorization: Bearer KEY` (compared in constant time, never logged)' -r
complete -c mt -n "__fish_mt_using_subcommand serve" -l allow-files -d 'Let requests name images as file:// paths under this folder' -r -F
complete -c mt -n "__fish_mt_using_subcommand serve" -l max-batch -d 'Answers decoded together (the running batch)' -r
complete -c mt -n "__fish_mt_using_subcommand serve" -l queue -d 'Requests that may wait for a place in the batch; more get 429 with Retry-After' -r
complete -c mt -n "__fish_mt_using_subcommand serve" -l timeout -d 'Longest a request may take, waiting included (seconds); then 504' -r
complete -c mt -n "__fish_mt_using_subcommand serve" -l max-body -d 'Largest request body (MiB); larger get 413' -r
complete -c mt -n "__fish_mt_using_subcommand serve" -l max-image-pixels -d 'Most pixels an image may have (width x height); larger get 413' -r
complete -c mt -n "__fish_mt_using_subcommand serve" -l max-new-tokens -d 'Most tokens per answer when a request gives no max_tokens' -r
complete -c mt -n "__fish_mt_using_subcommand serve" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand serve" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand serve" -l cpu -d 'Run on the CPU even when a GPU is visible'
complete -c mt -n "__fish_mt_using_subcommand serve" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand serve" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand serve" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand serve" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mt -n "__fish_mt_using_subcommand serve" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand train" -l stage -d '1: projector alignment (the projector only); 2: instruction tuning (the language model and the projector); CLIP stays frozen' -r -f -a "1\t'Projector alignment: the projector only (lr 2e-3)'
2\t'Instruction tuning: the language model and the projector (lr 2e-5)'"
complete -c mt -n "__fish_mt_using_subcommand train" -l vision-tower -l mmproj -d 'CLIP tower folder when the checkpoint does not carry or find one; with a GGUF --model, its mmproj GGUF file (llama.cpp\'s LLaVA pair, as llama-mtmd-cli takes it)' -r -F
complete -c mt -n "__fish_mt_using_subcommand train" -l projector -d 'Start the projector from these weights (a stage-1 run\'s `mm_projector.safetensors`; LLaVA\'s --pretrain_mm_mlp_adapter)' -r -F
complete -c mt -n "__fish_mt_using_subcommand train" -l data -d 'LLaVA conversation JSON or JSONL ({id, image, conversations}); with --bench, the benchmark\'s folder or file in any layout `mt convert vqa` reads' -r -F
complete -c mt -n "__fish_mt_using_subcommand train" -l bench -d 'Read --data as VQA-RAD, SLAKE or PathVQA (one `<image>\\nQ` / `A` exchange per question)' -r -f -a "vqa-rad\t'VQA-RAD'
slake\t'SLAKE'
pathvqa\t'PathVQA'"
complete -c mt -n "__fish_mt_using_subcommand train" -l split -d 'The benchmark split to train on' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l image-folder -l images -d 'Where image paths in --data resolve (default: the data file\'s folder)' -r -F
complete -c mt -n "__fish_mt_using_subcommand train" -l conv-mode -d 'Conversation template the records are trained in (LLaVA\'s `--version`: llama3, v1 / vicuna_v1, llava_v1, llama_2, llava_llama_2, mistral_instruct, mpt, chatml_direct, phi3_instruct, plain for stage-1 captions). Default: the checkpoint family\'s, as inference picks it (llama3 for LLaVA-Med++)' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l max-steps -d 'Stop after N optimizer steps (the schedule spans N steps)' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l epochs -d 'Passes over the data' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l lr -d 'Peak learning rate' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l projector-lr -d 'Peak learning rate of the projector (default: --lr, or the LoRA preset\'s)' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l batch-size -d 'Samples per device per micro-batch' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l grad-accum -d 'Micro-batches per optimizer step' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l warmup-ratio -d 'Warmup steps as a fraction of all steps' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l weight-decay -d 'AdamW\'s decoupled weight decay (not applied to biases and norms)' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l max-grad-norm -d 'Clip the global gradient norm to this (0 = off)' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l model-max-length -d 'Longest sequence in tokens, image rows included' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l gradient-checkpointing -d 'Recompute each decoder layer in the backward pass instead of keeping its activations (default: on for a GPU, as the reference scripts; off on the CPU)' -r -f -a "true\t''
false\t''"
complete -c mt -n "__fish_mt_using_subcommand train" -l image-aspect-ratio -d '`pad` images to square with the mean colour, or `square` (resize + centre crop)' -r -f -a "pad\t'Pad to square with the mean colour, then resize'
square\t'Resize and centre-crop to square'"
complete -c mt -n "__fish_mt_using_subcommand train" -l group-by-modality-length -d 'Group samples by modality and length (LLaVA\'s group_by_modality_length)' -r -f -a "true\t''
false\t''"
complete -c mt -n "__fish_mt_using_subcommand train" -l lora-r -d 'LoRA rank: train LoRA adapters on every language-model Linear layer' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l lora-alpha -d 'LoRA alpha (scale alpha / r; default 2 x r)' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l lora-dropout -d 'LoRA dropout on the adapters\' inputs (default: the reference\'s, see the presets)' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l save-steps -d 'Save a checkpoint every N steps (0 = only at the end)' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l save-total-limit -d 'Checkpoints to keep (0 = all)' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l gpu -d 'GPU index (needs a CUDA build). Default: GPU 0 when a CUDA build sees one, else the CPU' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l stop-after-steps -d 'Save and stop after N steps in this process (time-limited jobs; continue with --resume)' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l world-size -d 'Ranks to plan for (default: the launcher\'s WORLD_SIZE, else 1)' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l device-memory -d 'The memory of one device that the plan must fit, like 80GB (default: the GPU\'s free memory, or the host\'s available memory on the CPU)' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l zero -d 'ZeRO stage over the data-parallel ranks: 1 shards the f32 master weights and AdamW moments, 2 also the accumulated gradients (reduce-scattered); weights are all-gathered after each update. 0: every rank holds everything' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l offload -d 'Keep the optimizer (f32 master weights and moments) in host memory and run AdamW on the CPU; the device holds the weights, gradients and activations' -r -f -a "optimizer\t'f32 master weights and AdamW moments, updated on the CPU'"
complete -c mt -n "__fish_mt_using_subcommand train" -l quantize -d 'QLoRA: load the frozen language model quantized (q8_0, q6k, q4k; see `mt caption --help`) and train LoRA adapters (or, with --stage 1, the projector) on it; the backward pass goes through the dequantized weights' -r -f -a "q8_0\t'8-bit blocks of 32 (8.5 bits a weight)'
q6k\t'6-bit k-quants (6.6 bits a weight)'
q4k\t'4-bit k-quants (4.5 bits a weight)'"
complete -c mt -n "__fish_mt_using_subcommand train" -l model -l ckpt -d 'Checkpoint to start from (original LLaVA layout)' -r -F
complete -c mt -n "__fish_mt_using_subcommand train" -l dtype -d 'Parameter dtype (default: bf16 on a GPU, f32 on the CPU; f16 is refused: it needs loss scaling)' -r -f -a "f32\t'32-bit float'
bf16\t'bfloat16'
f16\t'IEEE half precision'"
complete -c mt -n "__fish_mt_using_subcommand train" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand train" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand train" -l resume -d 'Continue from the last checkpoint in --run-dir (same flags)'
complete -c mt -n "__fish_mt_using_subcommand train" -l plot -d 'Also write loss / learning-rate curves to curves.png in the run directory'
complete -c mt -n "__fish_mt_using_subcommand train" -l plan -d 'Print what one device will hold (weights, gradients, master weights, optimizer moments, activations, workspace) for these flags and exit; reads the config only. Every run prints this plan first and refuses one that does not fit the device'
complete -c mt -n "__fish_mt_using_subcommand train" -l cpu -d 'Train on the CPU even when a GPU is visible (tiny configs)'
complete -c mt -n "__fish_mt_using_subcommand train" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand train" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand train" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand train" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand train" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mt -n "__fish_mt_using_subcommand train" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand finetune" -l vision-tower -l mmproj -d 'CLIP tower folder when the checkpoint does not carry or find one; with a GGUF --model, its mmproj GGUF file (llama.cpp\'s LLaVA pair, as llama-mtmd-cli takes it)' -r -F
complete -c mt -n "__fish_mt_using_subcommand finetune" -l projector -d 'Start the projector from these weights (a stage-1 run\'s `mm_projector.safetensors`; LLaVA\'s --pretrain_mm_mlp_adapter)' -r -F
complete -c mt -n "__fish_mt_using_subcommand finetune" -l data -d 'LLaVA conversation JSON or JSONL ({id, image, conversations}); with --bench, the benchmark\'s folder or file in any layout `mt convert vqa` reads' -r -F
complete -c mt -n "__fish_mt_using_subcommand finetune" -l bench -d 'Read --data as VQA-RAD, SLAKE or PathVQA (one `<image>\\nQ` / `A` exchange per question)' -r -f -a "vqa-rad\t'VQA-RAD'
slake\t'SLAKE'
pathvqa\t'PathVQA'"
complete -c mt -n "__fish_mt_using_subcommand finetune" -l split -d 'The benchmark split to train on' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l image-folder -l images -d 'Where image paths in --data resolve (default: the data file\'s folder)' -r -F
complete -c mt -n "__fish_mt_using_subcommand finetune" -l conv-mode -d 'Conversation template the records are trained in (LLaVA\'s `--version`: llama3, v1 / vicuna_v1, llava_v1, llama_2, llava_llama_2, mistral_instruct, mpt, chatml_direct, phi3_instruct, plain for stage-1 captions). Default: the checkpoint family\'s, as inference picks it (llama3 for LLaVA-Med++)' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l max-steps -d 'Stop after N optimizer steps (the schedule spans N steps)' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l epochs -d 'Passes over the data' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l lr -d 'Peak learning rate' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l projector-lr -d 'Peak learning rate of the projector (default: --lr, or the LoRA preset\'s)' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l batch-size -d 'Samples per device per micro-batch' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l grad-accum -d 'Micro-batches per optimizer step' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l warmup-ratio -d 'Warmup steps as a fraction of all steps' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l weight-decay -d 'AdamW\'s decoupled weight decay (not applied to biases and norms)' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l max-grad-norm -d 'Clip the global gradient norm to this (0 = off)' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l model-max-length -d 'Longest sequence in tokens, image rows included' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l gradient-checkpointing -d 'Recompute each decoder layer in the backward pass instead of keeping its activations (default: on for a GPU, as the reference scripts; off on the CPU)' -r -f -a "true\t''
false\t''"
complete -c mt -n "__fish_mt_using_subcommand finetune" -l image-aspect-ratio -d '`pad` images to square with the mean colour, or `square` (resize + centre crop)' -r -f -a "pad\t'Pad to square with the mean colour, then resize'
square\t'Resize and centre-crop to square'"
complete -c mt -n "__fish_mt_using_subcommand finetune" -l group-by-modality-length -d 'Group samples by modality and length (LLaVA\'s group_by_modality_length)' -r -f -a "true\t''
false\t''"
complete -c mt -n "__fish_mt_using_subcommand finetune" -l lora-r -d 'LoRA rank: train LoRA adapters on every language-model Linear layer' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l lora-alpha -d 'LoRA alpha (scale alpha / r; default 2 x r)' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l lora-dropout -d 'LoRA dropout on the adapters\' inputs (default: the reference\'s, see the presets)' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l save-steps -d 'Save a checkpoint every N steps (0 = only at the end)' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l save-total-limit -d 'Checkpoints to keep (0 = all)' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l gpu -d 'GPU index (needs a CUDA build). Default: GPU 0 when a CUDA build sees one, else the CPU' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l stop-after-steps -d 'Save and stop after N steps in this process (time-limited jobs; continue with --resume)' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l world-size -d 'Ranks to plan for (default: the launcher\'s WORLD_SIZE, else 1)' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l device-memory -d 'The memory of one device that the plan must fit, like 80GB (default: the GPU\'s free memory, or the host\'s available memory on the CPU)' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l zero -d 'ZeRO stage over the data-parallel ranks: 1 shards the f32 master weights and AdamW moments, 2 also the accumulated gradients (reduce-scattered); weights are all-gathered after each update. 0: every rank holds everything' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l offload -d 'Keep the optimizer (f32 master weights and moments) in host memory and run AdamW on the CPU; the device holds the weights, gradients and activations' -r -f -a "optimizer\t'f32 master weights and AdamW moments, updated on the CPU'"
complete -c mt -n "__fish_mt_using_subcommand finetune" -l quantize -d 'QLoRA: load the frozen language model quantized (q8_0, q6k, q4k; see `mt caption --help`) and train LoRA adapters (or, with --stage 1, the projector) on it; the backward pass goes through the dequantized weights' -r -f -a "q8_0\t'8-bit blocks of 32 (8.5 bits a weight)'
q6k\t'6-bit k-quants (6.6 bits a weight)'
q4k\t'4-bit k-quants (4.5 bits a weight)'"
complete -c mt -n "__fish_mt_using_subcommand finetune" -l model -l ckpt -d 'Checkpoint to start from (original LLaVA layout)' -r -F
complete -c mt -n "__fish_mt_using_subcommand finetune" -l dtype -d 'Parameter dtype (default: bf16 on a GPU, f32 on the CPU; f16 is refused: it needs loss scaling)' -r -f -a "f32\t'32-bit float'
bf16\t'bfloat16'
f16\t'IEEE half precision'"
complete -c mt -n "__fish_mt_using_subcommand finetune" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand finetune" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand finetune" -l resume -d 'Continue from the last checkpoint in --run-dir (same flags)'
complete -c mt -n "__fish_mt_using_subcommand finetune" -l plot -d 'Also write loss / learning-rate curves to curves.png in the run directory'
complete -c mt -n "__fish_mt_using_subcommand finetune" -l plan -d 'Print what one device will hold (weights, gradients, master weights, optimizer moments, activations, workspace) for these flags and exit; reads the config only. Every run prints this plan first and refuses one that does not fit the device'
complete -c mt -n "__fish_mt_using_subcommand finetune" -l cpu -d 'Train on the CPU even when a GPU is visible (tiny configs)'
complete -c mt -n "__fish_mt_using_subcommand finetune" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand finetune" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand finetune" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand finetune" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand finetune" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mt -n "__fish_mt_using_subcommand finetune" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand eval; and not __fish_seen_subcommand_from score slake vqa-rad pathvqa help" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand eval; and not __fish_seen_subcommand_from score slake vqa-rad pathvqa help" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and not __fish_seen_subcommand_from score slake vqa-rad pathvqa help" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand eval; and not __fish_seen_subcommand_from score slake vqa-rad pathvqa help" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand eval; and not __fish_seen_subcommand_from score slake vqa-rad pathvqa help" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand eval; and not __fish_seen_subcommand_from score slake vqa-rad pathvqa help" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand eval; and not __fish_seen_subcommand_from score slake vqa-rad pathvqa help" -s h -l help -d 'Print help'
complete -c mt -n "__fish_mt_using_subcommand eval; and not __fish_seen_subcommand_from score slake vqa-rad pathvqa help" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand eval; and not __fish_seen_subcommand_from score slake vqa-rad pathvqa help" -f -a "score" -d 'Score a LLaVA answer JSONL against ground truth in the LLaVA eval layout'
complete -c mt -n "__fish_mt_using_subcommand eval; and not __fish_seen_subcommand_from score slake vqa-rad pathvqa help" -f -a "slake" -d 'Generate answers on SLAKE with a checkpoint and score them'
complete -c mt -n "__fish_mt_using_subcommand eval; and not __fish_seen_subcommand_from score slake vqa-rad pathvqa help" -f -a "vqa-rad" -d 'Generate answers on VQA-RAD with a checkpoint and score them'
complete -c mt -n "__fish_mt_using_subcommand eval; and not __fish_seen_subcommand_from score slake vqa-rad pathvqa help" -f -a "pathvqa" -d 'Generate answers on PathVQA with a checkpoint and score them'
complete -c mt -n "__fish_mt_using_subcommand eval; and not __fish_seen_subcommand_from score slake vqa-rad pathvqa help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from score" -l gt -d 'Ground truth: JSON array (or JSONL) of {id, conversations: [human, gpt], answer_type}' -r -F
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from score" -l pred -d 'Answers: LLaVA answer JSONL (question_id, text, ...)' -r -F
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from score" -l scorer -d 'Which reference scoring to reproduce' -r -f -a "llava-med\t'run_eval_nocandi.py of the MedTrinity-25M repository'
multimedeval\t'VQA.evaluate of multimedeval 1.0.0'"
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from score" -l bench -d 'Show the paper\'s LLaVA-Med++ numbers for this benchmark beside ours' -r -f -a "vqa-rad\t'VQA-RAD'
slake\t'SLAKE'
pathvqa\t'PathVQA'"
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from score" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from score" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from score" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from score" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from score" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from score" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from score" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from score" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l model -l ckpt -d 'Checkpoint folder (original LLaVA or llava-hf layout), or a Hub model id `org/name[@revision]` (from the Hugging Face cache, fetched when missing)' -r -F
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l vision-tower -l mmproj -d 'CLIP tower folder when the checkpoint does not carry or find one; with a GGUF --model, its mmproj GGUF file (llama.cpp\'s LLaVA pair, as llama-mtmd-cli takes it)' -r -F
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l dtype -d 'Compute dtype (default: bf16 on a GPU, f32 on the CPU)' -r -f -a "f32\t'32-bit float'
bf16\t'bfloat16'
f16\t'IEEE half precision'"
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l quantize -d 'Quantize the language model at load: its Linear weights, LM head and token embeddings become GGML blocks (q8_0: 8.5 bits a weight, q6k: 6.6, q4k: 4.5; a matrix whose rows are not whole blocks falls back to q8_0, else stays dense). The vision tower, the projector and the norms stay in --dtype. Inference only' -r -f -a "q8_0\t'8-bit blocks of 32 (8.5 bits a weight)'
q6k\t'6-bit k-quants (6.6 bits a weight)'
q4k\t'4-bit k-quants (4.5 bits a weight)'"
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l data -d 'Benchmark data: a folder in the released layout or the hub parquet copy, or a JSON file in the LLaVA eval layout' -r -F
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l split -d 'Split to evaluate' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l image-folder -l images -d 'Folder the images of a LLaVA eval JSON are relative to (default: the file\'s)' -r -F
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l gpu -d 'GPU indices; with several, one worker process each over contiguous chunks. Default: GPU 0 when a CUDA build sees one, else the CPU' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l batch-size -d 'Questions per forward pass' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l conv-mode -d 'Conversation template the question is put in (LLaVA\'s `--conv-mode`: llama3, vicuna_v1, llava_v1, llava_llama_2, mistral_instruct, chatml_direct, phi3_instruct, plain, ...; `llava-med:vicuna_v1` for LLaVA-Med\'s own rendering). Default: the checkpoint\'s (llama3 for LLaVA-Med++)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l temperature -d 'Sampling temperature (default 0: greedy, reproducible)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l top-p -d 'Nucleus sampling mass (default 1: off)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l top-k -d 'Sample among the k most likely tokens (default 0: off)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l limit -d 'Evaluate only the first N questions' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l chunks -d 'Split the questions into N contiguous chunks, one worker process each (default: one per --gpu; GPUs are dealt out in turn)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l chunk -d 'Answer only chunk K of N into --run-dir (Slurm arrays, several machines); a later run without --chunk in the same --run-dir merges and scores' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l max-new-tokens -d 'Most tokens generated per answer (the reference\'s 1024)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l all-languages -d 'SLAKE: the Chinese questions too (the paper used the English ones)'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l cpu -d 'Run on the CPU even when a GPU is visible'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l reference-decoding -d 'Decode as the reference\'s eval script does: sampling at temperature 0.1, top-k from the checkpoint\'s generation_config.json (else 50), no top-p'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from slake" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l model -l ckpt -d 'Checkpoint folder (original LLaVA or llava-hf layout), or a Hub model id `org/name[@revision]` (from the Hugging Face cache, fetched when missing)' -r -F
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l vision-tower -l mmproj -d 'CLIP tower folder when the checkpoint does not carry or find one; with a GGUF --model, its mmproj GGUF file (llama.cpp\'s LLaVA pair, as llama-mtmd-cli takes it)' -r -F
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l dtype -d 'Compute dtype (default: bf16 on a GPU, f32 on the CPU)' -r -f -a "f32\t'32-bit float'
bf16\t'bfloat16'
f16\t'IEEE half precision'"
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l quantize -d 'Quantize the language model at load: its Linear weights, LM head and token embeddings become GGML blocks (q8_0: 8.5 bits a weight, q6k: 6.6, q4k: 4.5; a matrix whose rows are not whole blocks falls back to q8_0, else stays dense). The vision tower, the projector and the norms stay in --dtype. Inference only' -r -f -a "q8_0\t'8-bit blocks of 32 (8.5 bits a weight)'
q6k\t'6-bit k-quants (6.6 bits a weight)'
q4k\t'4-bit k-quants (4.5 bits a weight)'"
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l data -d 'Benchmark data: a folder in the released layout or the hub parquet copy, or a JSON file in the LLaVA eval layout' -r -F
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l split -d 'Split to evaluate' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l image-folder -l images -d 'Folder the images of a LLaVA eval JSON are relative to (default: the file\'s)' -r -F
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l gpu -d 'GPU indices; with several, one worker process each over contiguous chunks. Default: GPU 0 when a CUDA build sees one, else the CPU' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l batch-size -d 'Questions per forward pass' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l conv-mode -d 'Conversation template the question is put in (LLaVA\'s `--conv-mode`: llama3, vicuna_v1, llava_v1, llava_llama_2, mistral_instruct, chatml_direct, phi3_instruct, plain, ...; `llava-med:vicuna_v1` for LLaVA-Med\'s own rendering). Default: the checkpoint\'s (llama3 for LLaVA-Med++)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l temperature -d 'Sampling temperature (default 0: greedy, reproducible)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l top-p -d 'Nucleus sampling mass (default 1: off)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l top-k -d 'Sample among the k most likely tokens (default 0: off)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l limit -d 'Evaluate only the first N questions' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l chunks -d 'Split the questions into N contiguous chunks, one worker process each (default: one per --gpu; GPUs are dealt out in turn)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l chunk -d 'Answer only chunk K of N into --run-dir (Slurm arrays, several machines); a later run without --chunk in the same --run-dir merges and scores' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l max-new-tokens -d 'Most tokens generated per answer (the reference\'s 1024)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l all-languages -d 'SLAKE: the Chinese questions too (the paper used the English ones)'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l cpu -d 'Run on the CPU even when a GPU is visible'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l reference-decoding -d 'Decode as the reference\'s eval script does: sampling at temperature 0.1, top-k from the checkpoint\'s generation_config.json (else 50), no top-p'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from vqa-rad" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l model -l ckpt -d 'Checkpoint folder (original LLaVA or llava-hf layout), or a Hub model id `org/name[@revision]` (from the Hugging Face cache, fetched when missing)' -r -F
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l vision-tower -l mmproj -d 'CLIP tower folder when the checkpoint does not carry or find one; with a GGUF --model, its mmproj GGUF file (llama.cpp\'s LLaVA pair, as llama-mtmd-cli takes it)' -r -F
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l dtype -d 'Compute dtype (default: bf16 on a GPU, f32 on the CPU)' -r -f -a "f32\t'32-bit float'
bf16\t'bfloat16'
f16\t'IEEE half precision'"
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l quantize -d 'Quantize the language model at load: its Linear weights, LM head and token embeddings become GGML blocks (q8_0: 8.5 bits a weight, q6k: 6.6, q4k: 4.5; a matrix whose rows are not whole blocks falls back to q8_0, else stays dense). The vision tower, the projector and the norms stay in --dtype. Inference only' -r -f -a "q8_0\t'8-bit blocks of 32 (8.5 bits a weight)'
q6k\t'6-bit k-quants (6.6 bits a weight)'
q4k\t'4-bit k-quants (4.5 bits a weight)'"
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l data -d 'Benchmark data: a folder in the released layout or the hub parquet copy, or a JSON file in the LLaVA eval layout' -r -F
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l split -d 'Split to evaluate' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l image-folder -l images -d 'Folder the images of a LLaVA eval JSON are relative to (default: the file\'s)' -r -F
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l gpu -d 'GPU indices; with several, one worker process each over contiguous chunks. Default: GPU 0 when a CUDA build sees one, else the CPU' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l batch-size -d 'Questions per forward pass' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l conv-mode -d 'Conversation template the question is put in (LLaVA\'s `--conv-mode`: llama3, vicuna_v1, llava_v1, llava_llama_2, mistral_instruct, chatml_direct, phi3_instruct, plain, ...; `llava-med:vicuna_v1` for LLaVA-Med\'s own rendering). Default: the checkpoint\'s (llama3 for LLaVA-Med++)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l temperature -d 'Sampling temperature (default 0: greedy, reproducible)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l top-p -d 'Nucleus sampling mass (default 1: off)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l top-k -d 'Sample among the k most likely tokens (default 0: off)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l limit -d 'Evaluate only the first N questions' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l chunks -d 'Split the questions into N contiguous chunks, one worker process each (default: one per --gpu; GPUs are dealt out in turn)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l chunk -d 'Answer only chunk K of N into --run-dir (Slurm arrays, several machines); a later run without --chunk in the same --run-dir merges and scores' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l max-new-tokens -d 'Most tokens generated per answer (the reference\'s 1024)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l all-languages -d 'SLAKE: the Chinese questions too (the paper used the English ones)'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l cpu -d 'Run on the CPU even when a GPU is visible'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l reference-decoding -d 'Decode as the reference\'s eval script does: sampling at temperature 0.1, top-k from the checkpoint\'s generation_config.json (else 50), no top-p'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from pathvqa" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from help" -f -a "score" -d 'Score a LLaVA answer JSONL against ground truth in the LLaVA eval layout'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from help" -f -a "slake" -d 'Generate answers on SLAKE with a checkpoint and score them'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from help" -f -a "vqa-rad" -d 'Generate answers on VQA-RAD with a checkpoint and score them'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from help" -f -a "pathvqa" -d 'Generate answers on PathVQA with a checkpoint and score them'
complete -c mt -n "__fish_mt_using_subcommand eval; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mt -n "__fish_mt_using_subcommand completions" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand completions" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand completions" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand completions" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand completions" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand completions" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand completions" -s h -l help -d 'Print help'
complete -c mt -n "__fish_mt_using_subcommand completions" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand replay" -l run-dir -d 'Write the run directory here instead of `runs/<cmd>-<time>-<id>/`' -r -F
complete -c mt -n "__fish_mt_using_subcommand replay" -l seed -d 'Seed for every random choice (sampling, shuffling, initialisation)' -r
complete -c mt -n "__fish_mt_using_subcommand replay" -l dry-run -d 'Print the command line instead of running it'
complete -c mt -n "__fish_mt_using_subcommand replay" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG overrides'
complete -c mt -n "__fish_mt_using_subcommand replay" -s q -l quiet -d 'Less log output (-q warnings only, -qq errors only) and no progress bars'
complete -c mt -n "__fish_mt_using_subcommand replay" -l json -d 'Machine-readable JSON on stdout instead of tables'
complete -c mt -n "__fish_mt_using_subcommand replay" -l no-run-dir -d 'Do not write a run directory'
complete -c mt -n "__fish_mt_using_subcommand replay" -s h -l help -d 'Print help'
complete -c mt -n "__fish_mt_using_subcommand replay" -s V -l version -d 'Print version'
complete -c mt -n "__fish_mt_using_subcommand help; and not __fish_seen_subcommand_from download inspect convert roi caption chat serve train finetune eval completions replay help" -f -a "download" -d 'Download dataset shards and model checkpoints from the Hugging Face Hub (resumable, verified, into the standard cache shared with huggingface_hub)'
complete -c mt -n "__fish_mt_using_subcommand help; and not __fish_seen_subcommand_from download inspect convert roi caption chat serve train finetune eval completions replay help" -f -a "inspect" -d 'Statistics, samples and plots of dataset shards'
complete -c mt -n "__fish_mt_using_subcommand help; and not __fish_seen_subcommand_from download inspect convert roi caption chat serve train finetune eval completions replay help" -f -a "convert" -d 'Convert between dataset, benchmark, medical-image and checkpoint formats'
complete -c mt -n "__fish_mt_using_subcommand help; and not __fish_seen_subcommand_from download inspect convert roi caption chat serve train finetune eval completions replay help" -f -a "roi" -d 'Regions of interest from masks or boxes: boxes, area %, position words, overlays'
complete -c mt -n "__fish_mt_using_subcommand help; and not __fish_seen_subcommand_from download inspect convert roi caption chat serve train finetune eval completions replay help" -f -a "caption" -d 'Generate captions with a LLaVA-style model (the MedTrinity captioner or LLaVA-Med++)'
complete -c mt -n "__fish_mt_using_subcommand help; and not __fish_seen_subcommand_from download inspect convert roi caption chat serve train finetune eval completions replay help" -f -a "chat" -d 'Ask a model about an image: a conversation on the terminal, or JSONL requests on stdin'
complete -c mt -n "__fish_mt_using_subcommand help; and not __fish_seen_subcommand_from download inspect convert roi caption chat serve train finetune eval completions replay help" -f -a "serve" -d 'Serve a model over OpenAI\'s chat completions API (continuous batching)'
complete -c mt -n "__fish_mt_using_subcommand help; and not __fish_seen_subcommand_from download inspect convert roi caption chat serve train finetune eval completions replay help" -f -a "train" -d 'Pre-training stages: projector alignment (1) and instruction tuning (2)'
complete -c mt -n "__fish_mt_using_subcommand help; and not __fish_seen_subcommand_from download inspect convert roi caption chat serve train finetune eval completions replay help" -f -a "finetune" -d 'Fine-tune on VQA-RAD, SLAKE or PathVQA, fully or with LoRA'
complete -c mt -n "__fish_mt_using_subcommand help; and not __fish_seen_subcommand_from download inspect convert roi caption chat serve train finetune eval completions replay help" -f -a "eval" -d 'Score answers, or run and score a checkpoint on a benchmark'
complete -c mt -n "__fish_mt_using_subcommand help; and not __fish_seen_subcommand_from download inspect convert roi caption chat serve train finetune eval completions replay help" -f -a "completions" -d 'Print a shell completion script'
complete -c mt -n "__fish_mt_using_subcommand help; and not __fish_seen_subcommand_from download inspect convert roi caption chat serve train finetune eval completions replay help" -f -a "replay" -d 'Run a command again with the arguments recorded in a run directory'
complete -c mt -n "__fish_mt_using_subcommand help; and not __fish_seen_subcommand_from download inspect convert roi caption chat serve train finetune eval completions replay help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mt -n "__fish_mt_using_subcommand help; and __fish_seen_subcommand_from convert" -f -a "vqa" -d 'VQA-RAD, SLAKE or PathVQA (released files or hub parquet) -> LLaVA eval JSON'
complete -c mt -n "__fish_mt_using_subcommand help; and __fish_seen_subcommand_from convert" -f -a "llava" -d 'MedTrinity shards, LLaVA files or image folders -> LLaVA conversation JSON/JSONL + image files'
complete -c mt -n "__fish_mt_using_subcommand help; and __fish_seen_subcommand_from convert" -f -a "parquet" -d 'Image folders, LLaVA files or MedTrinity shards -> HF-style parquet shards'
complete -c mt -n "__fish_mt_using_subcommand help; and __fish_seen_subcommand_from convert" -f -a "wds" -d 'Image folders, LLaVA files or MedTrinity shards -> WebDataset tar shards'
complete -c mt -n "__fish_mt_using_subcommand help; and __fish_seen_subcommand_from convert" -f -a "image" -d 'DICOM / NIfTI -> PNG/JPEG with metadata'
complete -c mt -n "__fish_mt_using_subcommand help; and __fish_seen_subcommand_from convert" -f -a "merge" -d 'Join the shard outputs of `mt caption --shard I/N` into one file'
complete -c mt -n "__fish_mt_using_subcommand help; and __fish_seen_subcommand_from convert" -f -a "merge-lora" -d 'Merge a LoRA adapter into its base checkpoint'
complete -c mt -n "__fish_mt_using_subcommand help; and __fish_seen_subcommand_from convert" -f -a "gguf" -d 'A checkpoint\'s language model -> a llama.cpp GGUF file (f32, f16 or quantized)'
complete -c mt -n "__fish_mt_using_subcommand help; and __fish_seen_subcommand_from convert" -f -a "knowledge-index" -d 'Build the BM25 index of a knowledge corpus'
complete -c mt -n "__fish_mt_using_subcommand help; and __fish_seen_subcommand_from eval" -f -a "score" -d 'Score a LLaVA answer JSONL against ground truth in the LLaVA eval layout'
complete -c mt -n "__fish_mt_using_subcommand help; and __fish_seen_subcommand_from eval" -f -a "slake" -d 'Generate answers on SLAKE with a checkpoint and score them'
complete -c mt -n "__fish_mt_using_subcommand help; and __fish_seen_subcommand_from eval" -f -a "vqa-rad" -d 'Generate answers on VQA-RAD with a checkpoint and score them'
complete -c mt -n "__fish_mt_using_subcommand help; and __fish_seen_subcommand_from eval" -f -a "pathvqa" -d 'Generate answers on PathVQA with a checkpoint and score them'
