//! Reading pickles that users hand mt (PyTorch `.bin` checkpoints, PathVQA's pickled
//! splits) without trusting them: how deep they nest, found before any reader builds
//! them ([`nesting`]), and for checkpoints, the names `torch.save` writes for weights
//! and nothing else ([`allow_list`]).

pub(crate) mod allow_list;
pub(crate) mod nesting;
