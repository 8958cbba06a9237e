"""Model plugins: one file per model, each a plain nn.Module built from conf/model/<name>.yaml."""
