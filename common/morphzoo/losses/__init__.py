"""Registration losses built from monai.losses."""
from morphzoo.losses.registration import (
    GlobalNCCLoss,
    RegistrationLoss,
    SeparableSSIMLoss,
    PerSampleSum,
    TotalVariationLoss,
    WeightedSumLoss,
    make_image_loss,
    make_regularizer,
    split_targets,
)
from morphzoo.losses.mind import MINDSSCLoss, mind_ssc
