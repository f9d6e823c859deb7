"""What the package's `evaluate` modules share: the papers they cite and the `MetricInfo` each describes itself with.

The modules import this one absolutely (`hf_neuralconv.metrics.module_info`): `evaluate.load` copies a module file
into its cache and imports it from there, where relative imports do not resolve.
"""

import datasets
import evaluate

LI_2016 = """\
@inproceedings{li2016diversity,
  title={A Diversity-Promoting Objective Function for Neural Conversation Models},
  author={Li, Jiwei and Galley, Michel and Brockett, Chris and Gao, Jianfeng and Dolan, Bill},
  booktitle={Proceedings of NAACL-HLT},
  year={2016}
}
"""
HE_GLASS_2020 = """\
@inproceedings{he2020negative,
  title={Negative Training for Neural Dialogue Response Generation},
  author={He, Tianxing and Glass, James},
  booktitle={Proceedings of ACL},
  year={2020}
}
"""
LIU_2019 = """\
@article{liu2019say,
  title={Say What I Want: Towards the Dark Side of Neural Dialogue Models},
  author={Liu, Haochen and Derr, Tyler and Liu, Zitao and Tang, Jiliang},
  journal={arXiv preprint arXiv:1909.06044},
  year={2019}
}
"""
PAPINENI_2002 = """\
@inproceedings{papineni2002bleu,
  title={BLEU: a Method for Automatic Evaluation of Machine Translation},
  author={Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing},
  booktitle={Proceedings of ACL},
  year={2002}
}
"""
POST_2018 = """\
@inproceedings{post2018call,
  title={A Call for Clarity in Reporting {BLEU} Scores},
  author={Post, Matt},
  booktitle={Proceedings of the Third Conference on Machine Translation: Research Papers},
  year={2018}
}
"""
# The columns of a metric that scores generated replies against reference replies.
PREDICTIONS_AND_REFERENCES = datasets.Features(
    {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
)


def metric_info(module_doc: str, citations: tuple[str, ...], inputs_description: str,
                features: datasets.Features) -> evaluate.MetricInfo:
    """The `MetricInfo` of one of the package's modules: its docstring as the description, the papers it cites."""
    return evaluate.MetricInfo(description=module_doc, citation="".join(citations),
                               inputs_description=inputs_description, features=features)
